#include "loader.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <random>
#include <tuple>

namespace bitvit {

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c) {
    auto splitmix = [](uint64_t x) {
        x += 0x9E3779B97F4A7C15ull;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
        return x ^ (x >> 31);
    };
    return splitmix(splitmix(splitmix(a) ^ b) ^ c);
}

namespace {

// A box {top, left, height, width} inside an H×W image as torchvision's RandomErasing and
// RandomResizedCrop draw it: an area share uniform in [min_area, max_area) and an aspect ratio
// log-uniform in [min_ratio, max_ratio], up to 10 tries for one that fits. The ratio is height/width
// for erasing (ratio_is_height_per_width) and width/height for the crop, as in torchvision.
std::optional<std::array<int64_t, 4>> random_box(int64_t H, int64_t W, double min_area, double max_area, double min_ratio,
                                                 double max_ratio, bool ratio_is_height_per_width, std::mt19937_64 & rng) {
    std::uniform_real_distribution<double> area_share(min_area, max_area);
    std::uniform_real_distribution<double> log_ratio(std::log(min_ratio), std::log(max_ratio));
    for (int attempt = 0; attempt < 10; ++attempt) {
        const double area = area_share(rng) * static_cast<double>(H * W);
        const double ratio = std::exp(log_ratio(rng));
        const auto along = static_cast<int64_t>(std::lround(std::sqrt(area * ratio)));
        const auto across = static_cast<int64_t>(std::lround(std::sqrt(area / ratio)));
        const int64_t h = ratio_is_height_per_width ? along : across, w = ratio_is_height_per_width ? across : along;
        if (h < 1 || w < 1 || h > H || w > W) continue;
        const int64_t top = std::uniform_int_distribution<int64_t>(0, H - h)(rng);
        const int64_t left = std::uniform_int_distribution<int64_t>(0, W - w)(rng);
        return std::array<int64_t, 4>{top, left, h, w};
    }
    return std::nullopt;
}

// Random erasing of one normalised image [C, H, W] (timm's RandomErasing, mode "pixel", one
// rectangle): area 2 %–1/3 of the image, aspect ratio log-uniform in [0.3, 1/0.3]; no fit in 10 tries
// erases nothing.
void erase_random_rectangle(float * image, int64_t C, int64_t H, int64_t W, std::mt19937_64 & rng) {
    const auto box = random_box(H, W, 0.02, 1.0 / 3.0, 0.3, 1.0 / 0.3, true, rng);
    if (!box) return;
    const auto [top, left, h, w] = *box;
    std::normal_distribution<float> noise(0.0f, 1.0f);
    for (int64_t c = 0; c < C; ++c)
        for (int64_t y = top; y < top + h; ++y)
            for (int64_t x = left; x < left + w; ++x) image[(c * H + y) * W + x] = noise(rng);
}

// torchvision's RandomResizedCrop.get_params on an H×W image; with no fit in 10 tries, torchvision
// takes a centre crop within the ratio range: for a square image, the whole image.
std::array<int64_t, 4> resized_crop_box(int64_t H, int64_t W, double min_scale, std::mt19937_64 & rng) {
    return random_box(H, W, min_scale, 1.0, 3.0 / 4.0, 4.0 / 3.0, false, rng).value_or(std::array<int64_t, 4>{0, 0, H, W});
}

// Bilinear sample (align_corners=False) of the box [top, top + h) × [left, left + w) of a uint8 plane,
// resampled to H×W, at output pixel (y, x); coordinates clamp at the box's edges.
float sample_box(const uint8_t * plane, int64_t W, const std::array<int64_t, 4> & box, int64_t H_out, int64_t W_out,
                 int64_t y, int64_t x) {
    auto source = [](int64_t out, int64_t out_size, int64_t start, int64_t size) {
        const double s = (static_cast<double>(out) + 0.5) * static_cast<double>(size) / static_cast<double>(out_size) - 0.5;
        const double clamped = std::min(std::max(s, 0.0), static_cast<double>(size - 1));
        const auto i0 = static_cast<int64_t>(std::floor(clamped));
        const int64_t i1 = std::min(i0 + 1, size - 1);
        return std::make_tuple(start + i0, start + i1, clamped - static_cast<double>(i0));
    };
    const auto [y0, y1, fy] = source(y, H_out, box[0], box[2]);
    const auto [x0, x1, fx] = source(x, W_out, box[1], box[3]);
    const double top = plane[y0 * W + x0] * (1 - fx) + plane[y0 * W + x1] * fx;
    const double bottom = plane[y1 * W + x0] * (1 - fx) + plane[y1 * W + x1] * fx;
    return static_cast<float>(top * (1 - fy) + bottom * fy);
}

}  // namespace

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[i] = i;
    std::mt19937_64 rng(mix_seed(seed, static_cast<uint64_t>(epoch), 0x5EED0DE5));
    std::shuffle(order.begin(), order.end(), rng);
    return order;
}

Batch make_batch(const data::ImageDataset & data, const int64_t * indices, int64_t count, const Preprocess & pre,
                 bool augment, uint64_t augment_seed, int64_t first_sample) {
    const int64_t C = data.channels, H = data.height, W = data.width;
    if (static_cast<int64_t>(pre.mean.size()) != C || static_cast<int64_t>(pre.std.size()) != C) {
        throw std::invalid_argument("data.mean and data.std have " + std::to_string(pre.mean.size()) +
                                    " values but the images have " + std::to_string(C) + " channels");
    }
    Batch batch{torch::empty({count, C, H, W}), torch::empty({count}, torch::kInt64)};
    float * out = batch.images.data_ptr<float>();
    int64_t * labels = batch.labels.data_ptr<int64_t>();
    const bool resized_crop = augment && pre.resized_crop_scale > 0;
    const int64_t pad = augment && !resized_crop ? pre.crop_padding : 0;
    for (int64_t j = 0; j < count; ++j) {
        const uint8_t * img = data.image(indices[j]);
        labels[j] = data.labels[static_cast<size_t>(indices[j])];
        int64_t dy = 0, dx = 0;
        bool flip = false;
        std::mt19937_64 rng(mix_seed(augment_seed, static_cast<uint64_t>(first_sample + j)));
        const std::array<int64_t, 4> box = resized_crop ? resized_crop_box(H, W, pre.resized_crop_scale, rng)
                                                        : std::array<int64_t, 4>{0, 0, H, W};
        if (augment) {
            if (pad > 0) {
                std::uniform_int_distribution<int64_t> offset(-pad, pad);
                dy = offset(rng);
                dx = offset(rng);
            }
            flip = pre.hflip && (rng() & 1);
        }
        // out[y][x] = padded_in[y + dy][x' + dx], x' = flipped x; outside the image is 0 before
        // normalisation (zero padding, as torchvision's RandomCrop(padding=p)).
        for (int64_t c = 0; c < C; ++c) {
            const float scale = 1.0f / (255.0f * pre.std[c]);
            const float shift = -pre.mean[c] / pre.std[c];
            const uint8_t * plane = img + c * H * W;
            float * dst = out + (j * C + c) * H * W;
            if (resized_crop) {
                for (int64_t y = 0; y < H; ++y) {
                    for (int64_t x = 0; x < W; ++x) {
                        dst[y * W + x] = sample_box(plane, W, box, H, W, y, flip ? W - 1 - x : x) * scale + shift;
                    }
                }
                continue;
            }
            for (int64_t y = 0; y < H; ++y) {
                const int64_t sy = y + dy;
                for (int64_t x = 0; x < W; ++x) {
                    const int64_t sx = (flip ? W - 1 - x : x) + dx;
                    const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
                    dst[y * W + x] = (inside ? plane[sy * W + sx] : 0) * scale + shift;
                }
            }
        }
        if (augment && pre.random_erase > 0 &&
            std::uniform_real_distribution<double>(0.0, 1.0)(rng) < pre.random_erase) {
            erase_random_rectangle(out + j * C * H * W, C, H, W, rng);
        }
    }
    return batch;
}

BatchLoader::BatchLoader(const data::ImageDataset & data, std::vector<int64_t> order, int64_t batch_size,
                         bool drop_last, Preprocess pre, bool augment, uint64_t seed, int64_t prefetch, int64_t first_batch,
                         Shard shard)
    : data_(data), order_(std::move(order)), batch_size_(batch_size), prefetch_(std::max<int64_t>(1, prefetch)), shard_(shard),
      pre_(std::move(pre)), augment_(augment), seed_(seed) {
    if (shard_.count < 1 || shard_.index < 0 || shard_.index >= shard_.count || batch_size_ % shard_.count != 0 ||
        (shard_.count > 1 && !drop_last)) {
        throw std::invalid_argument("shard " + std::to_string(shard_.index) + " of " + std::to_string(shard_.count) +
                                    " of batches of " + std::to_string(batch_size_) + ": the batch size must divide by the "
                                    "shard count, and sharded epochs drop their last part-batch");
    }
    const auto n = static_cast<int64_t>(order_.size());
    num_batches_ = drop_last ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
    first_batch_ = std::min(std::max<int64_t>(0, first_batch), num_batches_);
    produced_ = consumed_ = first_batch_;
    worker_ = std::thread([this] { run(); });
}

BatchLoader::~BatchLoader() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
}

void BatchLoader::run() {
    try {
        for (int64_t b = first_batch_; b < num_batches_; ++b) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                cv_.wait(lock, [&] { return stop_ || produced_ - consumed_ < prefetch_; });
                if (stop_) return;
            }
            const int64_t slice = batch_size_ / shard_.count, offset = shard_.index * slice;
            const int64_t start = b * batch_size_ + offset;
            const int64_t count = std::min<int64_t>(slice, static_cast<int64_t>(order_.size()) - start);
            Batch batch = make_batch(data_, order_.data() + start, count, pre_, augment_, mix_seed(seed_, b), offset);
            {
                std::lock_guard<std::mutex> lock(mutex_);
                ready_.push_back(std::move(batch));
                ++produced_;
            }
            cv_.notify_all();
        }
    } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        error_ = std::current_exception();
        cv_.notify_all();
    }
}

Batch BatchLoader::whole_batch(int64_t b) const {
    const int64_t start = b * batch_size_;
    const int64_t count = std::min<int64_t>(batch_size_, static_cast<int64_t>(order_.size()) - start);
    return make_batch(data_, order_.data() + start, count, pre_, augment_, mix_seed(seed_, b));
}

std::optional<Batch> BatchLoader::next() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (consumed_ == num_batches_) return std::nullopt;
    cv_.wait(lock, [&] { return !ready_.empty() || error_; });
    if (ready_.empty() && error_) std::rethrow_exception(error_);
    Batch batch = std::move(ready_.front());
    ready_.pop_front();
    ++consumed_;
    lock.unlock();
    cv_.notify_all();
    return batch;
}

}  // namespace bitvit
