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

Precision at(VisionModelImpl & model, const std::string & site) { return quant::precision_of(model.site_transform(site)); }

// One transformer block under `b`: `tokens` tokens of width D, each attending to `span` tokens (all
// N for DeiT, its window's M² for Swin), an MLP of `hidden` units.
void add_block(OpsReport & r, VisionModelImpl & model, const std::string & b, double tokens, double span, double D, double hidden) {
    auto linear = [&](const std::string & name, double macs) {
        r.layers.push_back(cost(b + name, macs, at(model, b + name + ".weight"), at(model, b + name + ".input"), true));
    };
    linear("attn.qkv", tokens * D * 3 * D);
    r.layers.push_back(cost(b + "attn.q@k", tokens * span * D, at(model, b + "attn.q"), at(model, b + "attn.k"), false));
    r.layers.push_back(cost(b + "attn.p@v", tokens * span * D, at(model, b + "attn.probs"), at(model, b + "attn.v"), false));
    linear("attn.proj", tokens * D * D);
    linear("mlp.fc1", tokens * D * hidden);
    linear("mlp.fc2", tokens * hidden * D);
}

void add_linear(OpsReport & r, VisionModelImpl & model, const std::string & layer, const std::string & site, double macs) {
    r.layers.push_back(cost(layer, macs, at(model, site + ".weight"), at(model, site + ".input"), true));
}

void deit_layers(OpsReport & r, DeitImpl & model) {
    const DeitConfig & c = model.config();
    const double N = static_cast<double>(c.num_tokens()), D = static_cast<double>(c.embed_dim);
    const double hidden = static_cast<double>(c.hidden());
    const double patch_in = static_cast<double>(c.in_chans * c.patch_size * c.patch_size);
    add_linear(r, model, "patch_embed", "patch_embed.proj", c.num_patches() * patch_in * D);
    for (int64_t i = 0; i < c.depth; ++i) add_block(r, model, "blocks." + std::to_string(i) + ".", N, N, D, hidden);
    add_linear(r, model, "head", "head", D * c.num_classes);
    if (c.distilled) add_linear(r, model, "head_dist", "head_dist", D * c.num_classes);
}

// Swin: attention runs on the windows of the map padded to a multiple of M (as timm computes it).
void swin_layers(OpsReport & r, SwinImpl & model) {
    const SwinConfig & c = model.config();
    const double patch_in = static_cast<double>(c.in_chans * c.patch_size * c.patch_size);
    const double grid = static_cast<double>(c.stage_resolution(0));
    add_linear(r, model, "patch_embed", "patch_embed.proj", grid * grid * patch_in * static_cast<double>(c.embed_dim));
    for (int64_t i = 0; i < c.num_stages(); ++i) {
        const std::string layer = "layers." + std::to_string(i) + ".";
        const int64_t res = c.stage_resolution(i), M = c.stage_window(i), padded = (res + M - 1) / M * M;
        const double D = static_cast<double>(c.stage_dim(i)), tokens = static_cast<double>(padded * padded);
        if (i > 0) add_linear(r, model, layer + "downsample", layer + "downsample.reduction", static_cast<double>(res * res) * 2 * D * D);
        for (int64_t j = 0; j < c.depths[i]; ++j) {
            add_block(r, model, layer + "blocks." + std::to_string(j) + ".", tokens, static_cast<double>(M * M), D,
                      static_cast<double>(c.stage_hidden(i)));
        }
    }
    add_linear(r, model, "head", "head.fc", static_cast<double>(c.stage_dim(c.num_stages() - 1) * c.num_classes));
}

}  // namespace

OpsReport count_ops(VisionModel model) {
    OpsReport r;
    if (auto deit = std::dynamic_pointer_cast<DeitImpl>(model.ptr())) {
        deit_layers(r, *deit);
    } else {
        swin_layers(r, *std::dynamic_pointer_cast<SwinImpl>(model.ptr()));
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
                p = at(*model, name);  // the weight's own site, e.g. blocks.0.attn.qkv.weight
            } catch (const std::invalid_argument &) {
                // norms and other weights without a site stay FP32
            }
        }
        if (p.bits < 32) {
            r.packed_bytes += numel * p.bits * p.groups / 8 + item.value().size(0) * 4.0;
        } else {
            r.packed_bytes += numel * 4;
            r.fp32_part_bytes += numel * 4;
        }
    }
    return r;
}

}  // namespace bitvit
