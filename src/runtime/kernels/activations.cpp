#include "runtime/kernels/activations.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "runtime/kernels/activations-body.h"

namespace bitvit::runtime {

float softmax_exp(float x) { return fixed_exp(x); }

namespace {

// The references' combination of 16 lane sums: 8 + 8, 4 + 4, 2 + 2, 1 + 1 (lanes is overwritten).
float pairwise_lanes(float (&lanes)[16]) {
    for (int width = 8; width >= 1; width /= 2) {
        for (int l = 0; l < width; ++l) lanes[l] += lanes[l + width];
    }
    return lanes[0];
}

}  // namespace

void softmax_rows_ref(float * x, int64_t rows, int64_t n, int64_t ld) {
    for (int64_t r = 0; r < rows; ++r) {
        float * row = x + r * ld;
        float mx = row[0];
        for (int64_t j = 1; j < n; ++j) mx = std::max(mx, row[j]);
        float lanes[16] = {};
        for (int64_t j = 0; j < n; ++j) {
            row[j] = fixed_exp(row[j] - mx);
            lanes[j % 16] += row[j];
        }
        const float sum = pairwise_lanes(lanes);
        for (int64_t j = 0; j < n; ++j) row[j] /= sum;
    }
}

namespace {

void check_supported(Isa isa, const char * what) {
    if (static_cast<int>(isa) > static_cast<int>(best_supported_isa())) {
        throw std::invalid_argument(std::string(what) + ": this CPU cannot run the " + isa_name(isa) + " tier");
    }
}

}  // namespace

void softmax_rows(Isa isa, float * x, int64_t rows, int64_t n, int64_t ld) {
    check_supported(isa, "softmax_rows");
    switch (isa) {
        case Isa::scalar: return softmax_rows_body(x, rows, n, ld);
        case Isa::avx2: return softmax_rows_avx2(x, rows, n, ld);
        case Isa::avx512bw:
        case Isa::avx512vpopcntdq: return softmax_rows_avx512(x, rows, n, ld);
    }
}

void softmax_rows(float * x, int64_t rows, int64_t n, int64_t ld) {
    static const Isa isa = selected_isa();
    softmax_rows(isa, x, rows, n, ld);
}

float gelu_value(float x) { return fixed_gelu(x); }

void gelu_ref(float * x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = fixed_gelu(x[i]);
}

void gelu(Isa isa, float * x, int64_t n) {
    check_supported(isa, "gelu");
    switch (isa) {
        case Isa::scalar: return gelu_body(x, n);
        case Isa::avx2: return gelu_avx2(x, n);
        case Isa::avx512bw:
        case Isa::avx512vpopcntdq: return gelu_avx512(x, n);
    }
}

void gelu(float * x, int64_t n) {
    static const Isa isa = selected_isa();
    gelu(isa, x, n);
}

void layer_norm_rows_ref(const float * x, int64_t rows, int64_t dim, const float * weight, const float * bias,
                         float eps, float * out) {
    for (int64_t r = 0; r < rows; ++r) {
        const float * row = x + r * dim;
        float lanes[16] = {};
        for (int64_t i = 0; i < dim; ++i) lanes[i % 16] += row[i];
        const float mean = pairwise_lanes(lanes) / static_cast<float>(dim);
        float square_lanes[16] = {};
        for (int64_t i = 0; i < dim; ++i) square_lanes[i % 16] += (row[i] - mean) * (row[i] - mean);
        const float inv = 1.0f / std::sqrt(pairwise_lanes(square_lanes) / static_cast<float>(dim) + eps);
        for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = (row[i] - mean) * inv * weight[i] + bias[i];
    }
}

void layer_norm_rows(Isa isa, const float * x, int64_t rows, int64_t dim, const float * weight, const float * bias,
                     float eps, float * out) {
    check_supported(isa, "layer_norm_rows");
    switch (isa) {
        case Isa::scalar: return layer_norm_rows_body(x, rows, dim, weight, bias, eps, out);
        case Isa::avx2: return layer_norm_rows_avx2(x, rows, dim, weight, bias, eps, out);
        case Isa::avx512bw:
        case Isa::avx512vpopcntdq: return layer_norm_rows_avx512(x, rows, dim, weight, bias, eps, out);
    }
}

void layer_norm_rows(const float * x, int64_t rows, int64_t dim, const float * weight, const float * bias, float eps,
                     float * out) {
    static const Isa isa = selected_isa();
    layer_norm_rows(isa, x, rows, dim, weight, bias, eps, out);
}

float gelu_negative_floor() {
    static const float floor = [] {
        float lo = -30.0f, hi = -1.0f;  // GELU(lo) is −0, GELU(hi) < 0
        while (std::nextafter(lo, hi) != hi) {
            const float mid = lo + (hi - lo) / 2;
            if (mid == lo || mid == hi) break;
            (fixed_gelu(mid) < 0.0f ? hi : lo) = mid;
        }
        return lo;
    }();
    return floor;
}

}  // namespace bitvit::runtime
