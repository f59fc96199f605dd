#include "verify.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace bitvit {

VerifyReport verify_packed(VisionModel model, const runtime::PackedModel & packed, const data::ImageDataset & data,
                           const Preprocess & pre, int64_t batch_size, int threads) {
    torch::NoGradGuard no_grad;
    model->eval();
    const std::vector<std::vector<float>> runtime_logits = packed.predict(data.pixels.data(), data.size(), threads);
    std::vector<int64_t> order(static_cast<size_t>(data.size()));
    for (int64_t i = 0; i < data.size(); ++i) order[i] = i;
    BatchLoader loader(data, std::move(order), batch_size, false, pre, false, 0, 2);
    VerifyReport r;
    int64_t torch_correct = 0, runtime_correct = 0;
    while (auto batch = loader.next()) {
        const torch::Tensor logits = model->forward(batch->images).contiguous();
        const int64_t classes = logits.size(1);
        const float * t = logits.data_ptr<float>();
        for (int64_t j = 0; j < logits.size(0); ++j, ++r.count) {
            const std::vector<float> & rt = runtime_logits[static_cast<size_t>(r.count)];
            const auto t_top = std::max_element(t + j * classes, t + (j + 1) * classes) - (t + j * classes);
            const auto r_top = std::max_element(rt.begin(), rt.end()) - rt.begin();
            const int64_t label = data.labels[static_cast<size_t>(r.count)];
            r.agree += t_top == r_top;
            torch_correct += t_top == label;
            runtime_correct += r_top == label;
            for (int64_t c = 0; c < classes; ++c) {
                r.max_abs_logit_diff = std::max(r.max_abs_logit_diff, static_cast<double>(std::fabs(t[j * classes + c] - rt[c])));
            }
        }
    }
    r.torch_accuracy = r.count ? static_cast<double>(torch_correct) / r.count : 0.0;
    r.runtime_accuracy = r.count ? static_cast<double>(runtime_correct) / r.count : 0.0;
    return r;
}

std::vector<BlockDivergence> block_divergence(VisionModel model, const runtime::PackedModel & packed,
                                              const data::ImageDataset & data, const Preprocess & pre, int64_t images) {
    torch::NoGradGuard no_grad;
    model->eval();
    images = std::min(images, data.size());
    std::vector<int64_t> first(static_cast<size_t>(images));
    for (int64_t i = 0; i < images; ++i) first[i] = i;
    BatchLoader loader(data, std::move(first), images, false, pre, false, 0, 1);
    const auto batch = loader.next();
    if (!batch) return {};
    model->set_capture(true);
    model->forward(batch->images);
    const std::vector<BlockTaps> taps = model->taps();
    model->set_capture(false);

    std::vector<BlockDivergence> out(taps.size());
    std::vector<float> image(static_cast<size_t>(data.image_bytes()));
    for (int64_t i = 0; i < images; ++i) {
        packed.normalize(data.image(i), image.data());
        std::vector<std::vector<float>> blocks;
        packed.forward(image.data(), 1, &blocks);
        if (blocks.size() != taps.size()) throw std::runtime_error("verify: the packed model and the checkpoint differ in depth");
        for (size_t b = 0; b < taps.size(); ++b) {
            const torch::Tensor ref = taps[b].hidden[i].contiguous();  // [N, D]
            const float * r = ref.data_ptr<float>();
            if (static_cast<size_t>(ref.numel()) != blocks[b].size()) throw std::runtime_error("verify: token shapes differ");
            for (size_t j = 0; j < blocks[b].size(); ++j) {
                const double d = std::fabs(static_cast<double>(blocks[b][j]) - r[j]);
                out[b].max_abs = std::max(out[b].max_abs, d);
                out[b].mean_abs += d;
                out[b].mean_ref += std::fabs(r[j]);
            }
        }
    }
    for (size_t b = 0; b < taps.size(); ++b) {
        const double n = static_cast<double>(images) * static_cast<double>(taps[b].hidden[0].numel());
        out[b].mean_abs /= n;
        out[b].mean_ref /= n;
    }
    return out;
}

}  // namespace bitvit
