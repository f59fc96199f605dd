#include "runtime/quant/encode-util.h"

namespace bitvit::runtime::quant {

ParamView param_view(const ActQuantizer & q, const char * key, SiteScope scope, int64_t head) {
    const std::vector<float> & p = q.params.at(key);
    if (p.size() == 1) return ParamView{p.data(), false};
    return scope == SiteScope::token ? ParamView{p.data(), true} : ParamView{p.data() + head, false};
}

float row_max(const float * x, int64_t n) {
    int64_t j = 0;
    float best = x[0];
    if (n >= 4) {
        __m128 lanes = _mm_loadu_ps(x);
        for (j = 4; j + 4 <= n; j += 4) lanes = _mm_max_ps(lanes, _mm_loadu_ps(x + j));
        alignas(16) float four[4];
        _mm_store_ps(four, lanes);
        best = std::max(std::max(four[0], four[1]), std::max(four[2], four[3]));
    }
    for (; j < n; ++j) best = std::max(best, x[j]);
    return best;
}

Operand plane_operand(int64_t rows, int64_t k) {
    Operand op;
    op.kind = Operand::Kind::planes;
    op.rows = rows;
    op.k = k;
    return op;
}

void add_plane(Operand & op, std::vector<uint64_t> sign, std::vector<uint64_t> mask, float scale) {
    Plane plane;
    plane.sign = std::move(sign);
    plane.mask = std::move(mask);
    plane.scale.assign(static_cast<size_t>(op.rows), scale);
    op.planes.push_back(std::move(plane));
}

Operand f32_operand(int64_t rows, int64_t k) {
    Operand op;
    op.rows = rows;
    op.k = k;
    op.values.resize(static_cast<size_t>(rows * k));
    return op;
}

}  // namespace bitvit::runtime::quant
