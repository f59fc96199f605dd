#include "ops.h"

#include "quant/quantizers.h"

namespace bitvit {
namespace {

using quant::Precision;

std::string operand(char role, const Precision & p) {
    std::string s(1, role);
    s += std::to_string(p.bits);
    if (p.groups > 1) s += "x" + std::to_string(p.groups);
    return s;
}

LayerCost cost(const std::string & name, double macs, const Precision & a, const Precision & b, bool weight_product) {
    LayerCost c{name, "", macs, 0, 0};
    const bool fp_a = a.bits >= 32, fp_b = b.bits >= 32;
    c.precision = fp_a && fp_b ? "FP" : weight_product ? operand('W', a) + operand('A', b) : operand('A', a) + "·" + operand('A', b);
    if (fp_a && fp_b) {
        c.flops = macs;
    } else if (fp_a || fp_b) {
        const Precision & q = fp_a ? b : a;
        c.flops = q.bits <= 2 ? macs / 2 * q.groups : macs;  // add/subtract only for binary/ternary
    } else {
        c.bops = macs * a.bits * a.groups * b.bits * b.groups;
    }
    return c;
}

Precision at(Deit & model, const std::string & site) { return quant::precision_of(model->site_transform(site)); }

}  // namespace

OpsReport count_ops(Deit & model) {
    const DeitConfig & c = model->config();
    const double N = static_cast<double>(c.num_tokens()), D = static_cast<double>(c.embed_dim);
    const double hidden = static_cast<double>(static_cast<int64_t>(c.embed_dim * c.mlp_ratio));
    const double patch_in = static_cast<double>(c.in_chans * c.patch_size * c.patch_size);
    OpsReport r;
    r.layers.push_back(cost("patch_embed", c.num_patches() * patch_in * D, at(model, "patch_embed.proj.weight"),
                            at(model, "patch_embed.proj.input"), true));
    for (int64_t i = 0; i < c.depth; ++i) {
        const std::string b = "blocks." + std::to_string(i) + ".";
        auto linear = [&](const std::string & name, double macs) {
            r.layers.push_back(cost(b + name, macs, at(model, b + name + ".weight"), at(model, b + name + ".input"), true));
        };
        linear("attn.qkv", N * D * 3 * D);
        r.layers.push_back(cost(b + "attn.q@k", N * N * D, at(model, b + "attn.q"), at(model, b + "attn.k"), false));
        r.layers.push_back(cost(b + "attn.p@v", N * N * D, at(model, b + "attn.probs"), at(model, b + "attn.v"), false));
        linear("attn.proj", N * D * D);
        linear("mlp.fc1", N * D * hidden);
        linear("mlp.fc2", N * hidden * D);
    }
    r.layers.push_back(cost("head", D * c.num_classes, at(model, "head.weight"), at(model, "head.input"), true));
    if (c.distilled) {
        r.layers.push_back(cost("head_dist", D * c.num_classes, at(model, "head_dist.weight"), at(model, "head_dist.input"), true));
    }
    for (const auto & l : r.layers) {
        r.macs += l.macs;
        r.flops += l.flops;
        r.bops += l.bops;
    }

    for (const auto & item : model->named_parameters()) {
        const std::string & name = item.key();
        const double numel = static_cast<double>(item.value().numel());
        r.fp32_bytes += is_method_tensor(name) ? 0 : numel * 4;
        if (name.find("weight_quantizer.") != std::string::npos) continue;  // folded into the per-row scale below
        const bool is_weight = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
        Precision p;
        if (is_weight) {
            try {
                p = at(model, name);  // the weight's own site, e.g. blocks.0.attn.qkv.weight
            } catch (const std::invalid_argument &) {
                // norms and other weights without a site stay FP32
            }
        }
        if (p.bits < 32) {
            r.packed_bytes += numel * p.bits * p.groups / 8 + item.value().size(0) * 4.0;
        } else {
            r.packed_bytes += numel * 4;
        }
    }
    return r;
}

}  // namespace bitvit
