#include "export.h"

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "format/safetensors.h"
#include "quant/quantizers.h"
#include "runtime/kernels/bgemm.h"
#include "runtime/model.h"

namespace bitvit {

using format::DType;
using nlohmann::json;

namespace {

constexpr const char * kQuantizerMarker = "_quantizer.";

void add_f32(format::SafetensorsWriter & out, const std::string & name, const torch::Tensor & t) {
    const torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
    out.add(name, DType::F32, c.sizes().vec(), c.data_ptr<float>(), static_cast<size_t>(c.numel()) * sizeof(float));
}

// A full-precision tensor, F16 when half storage is asked for (rounded to nearest even; a value
// outside F16's range is refused rather than stored as infinity).
void add_float(format::SafetensorsWriter & out, const std::string & name, const torch::Tensor & t, bool half) {
    if (!half) return add_f32(out, name, t);
    const torch::Tensor h = t.detach().to(torch::kFloat16).contiguous();
    if (!torch::isfinite(h).all().item<bool>()) {
        throw std::invalid_argument("export: tensor " + name + " has values beyond the F16 range (±65504): export it without half storage");
    }
    out.add(name, DType::F16, h.sizes().vec(), h.data_ptr<at::Half>(), static_cast<size_t>(h.numel()) * 2);
}

// Canonical bits (runtime/kernels/bgemm.h) of rows × k values: bit set where `set` is true.
std::vector<uint64_t> pack_bits(const torch::Tensor & set) {
    const torch::Tensor as_negative = torch::where(set, -1.0f, 1.0f).to(torch::kFloat32).contiguous();
    const int64_t rows = set.size(0), k = set.size(1);
    std::vector<uint64_t> bits(static_cast<size_t>(rows * runtime::b1_words(k)));
    runtime::pack_b1_rows_ref(as_negative.data_ptr<float>(), rows, k, k, bits.data());
    return bits;
}

void add_bits(format::SafetensorsWriter & out, const std::string & name, const torch::Tensor & set) {
    const std::vector<uint64_t> bits = pack_bits(set);
    out.add(name, DType::U64, {set.size(0), runtime::b1_words(set.size(1))}, bits.data(), bits.size() * sizeof(uint64_t));
}

// An LSQ weight as int8 codes, per-row scales and (with LSQ+) zero points: w_hat = (q − z)·s.
void add_code_weight(format::SafetensorsWriter & out, const std::string & site, const quant::QuantizerImpl & q,
                     const torch::Tensor & w_hat, bool half_scales, const std::function<void(const std::string &)> & fail) {
    const quant::Deployed d = q.deployed();
    const torch::Tensor step = d.tensors.at("step").flatten();
    if (d.options.at("qn") < -128 || d.options.at("qp") > 127) fail("codes wider than 8 bits cannot be packed");
    const torch::Tensor s = (step.numel() == 1 ? step.expand({w_hat.size(0)}) : step).contiguous();
    torch::Tensor zero = torch::zeros({w_hat.size(0)});
    if (d.tensors.count("zero_point")) {
        const torch::Tensor z = d.tensors.at("zero_point").flatten();
        zero = (z.numel() == 1 ? z.expand({w_hat.size(0)}) : z).contiguous();
    }
    // q = w_hat / s + z, an integer in [qn, qp].
    const torch::Tensor codes = torch::round(w_hat / s.unsqueeze(1) + zero.unsqueeze(1));
    if (!torch::allclose((codes - zero.unsqueeze(1)) * s.unsqueeze(1), w_hat, 1e-5, 1e-7)) fail("output is not step × integer code");
    const torch::Tensor codes8 = codes.to(torch::kInt8).contiguous();
    out.add(site + ".codes", DType::I8, codes8.sizes().vec(), codes8.data_ptr<int8_t>(), static_cast<size_t>(codes8.numel()));
    add_float(out, site + ".scale", s, half_scales);
    if (d.tensors.count("zero_point")) {
        const torch::Tensor z32 = zero.to(torch::kInt32).contiguous();
        out.add(site + ".zero_point", DType::I32, z32.sizes().vec(), z32.data_ptr<int32_t>(),
                static_cast<size_t>(z32.numel()) * sizeof(int32_t));
    }
}

// A quantized weight [out, …] in the encoding its table row promises; `w_hat` is the quantizer's
// output, checked to be exactly that encoding before anything is written.
void add_quantized_weight(format::SafetensorsWriter & out, const std::string & site, const quant::QuantizerImpl & q,
                          const torch::Tensor & w_hat_in, bool half_scales) {
    const torch::Tensor w_hat = w_hat_in.detach().flatten(1).contiguous();  // [out, K]
    const std::function<void(const std::string &)> fail = [&](const std::string & problem) {
        throw std::invalid_argument("export: weight site " + site + " (" + q.quantizer_name() + "): " + problem);
    };
    const spec::Encoding encoding = q.row().encoding;
    if (encoding == spec::Encoding::int8_codes) return add_code_weight(out, site, q, w_hat, half_scales, fail);
    if (encoding != spec::Encoding::pm1_plane && encoding != spec::Encoding::ternary_planes) fail("no packed form for this weight quantizer");
    // ±1 plane: every value ±s_row. Ternary: every value 0 or ±s_row.
    const torch::Tensor magnitude = w_hat.abs();
    const torch::Tensor scale = std::get<0>(magnitude.max(1));
    const torch::Tensor nonzero = magnitude > 0;
    const torch::Tensor expected = torch::where(nonzero, scale.unsqueeze(1).expand_as(magnitude), torch::zeros_like(magnitude));
    if (!torch::equal(magnitude, expected)) fail("row values differ in magnitude");
    add_bits(out, site + ".sign", w_hat < 0);
    if (encoding == spec::Encoding::pm1_plane) {
        // A zero is only possible in an all-zero row (scale 0): it decodes as 0·(+1).
        const torch::Tensor zero_rows = scale == 0;
        if (!torch::equal(nonzero.all(1) | zero_rows, torch::ones_like(zero_rows))) fail("a binary weight has zeros");
    } else {
        add_bits(out, site + ".mask", nonzero);
    }
    add_float(out, site + ".scale", scale, half_scales);
}

}  // namespace

ExportSummary export_packed(VisionModel model, const ExportOptions & options, const std::string & path) {
    torch::NoGradGuard no_grad;
    model->eval();
    const json architecture = json::parse(model->architecture_json());
    const bool swin = spec::is_swin_architecture(architecture);
    const auto in_chans = architecture.at("in_chans").get<int64_t>(), num_classes = architecture.at("num_classes").get<int64_t>();
    if (static_cast<int64_t>(options.mean.size()) != in_chans || static_cast<int64_t>(options.std.size()) != in_chans) {
        throw std::invalid_argument("export: mean and std need one value per input channel (" + std::to_string(in_chans) + ")");
    }
    format::SafetensorsWriter out;
    ExportSummary summary;
    json sites = json::object();

    // Weights and every other tensor of the model, except the quantizers' own state.
    const std::vector<std::string> site_list = model->site_names();
    const std::set<std::string> site_names(site_list.begin(), site_list.end());
    std::map<std::string, torch::Tensor> tensors;
    for (const auto & p : model->named_parameters()) tensors[p.key()] = p.value();
    for (const auto & b : model->named_buffers()) tensors[b.key()] = b.value();
    for (const auto & [name, tensor] : tensors) {
        if (name.find(kQuantizerMarker) != std::string::npos) continue;
        summary.fp32_bytes += tensor.numel() * 4;
        const auto transform =
            site_names.count(name) ? std::dynamic_pointer_cast<quant::QuantizerImpl>(model->site_transform(name)) : nullptr;
        if (!transform) {
            add_float(out, name, tensor, options.half_storage);
            continue;
        }
        add_quantized_weight(out, name, *transform, transform->forward(tensor), options.half_storage);
        sites[name] = json{{"quantizer", transform->quantizer_name()}};
        ++summary.packed_sites;
    }
    // Activation sites: the quantizer's deployed parameters and options.
    for (const auto & site : site_list) {
        if (model->site_info(site).kind == SiteKind::weight) continue;
        const auto q = std::dynamic_pointer_cast<quant::QuantizerImpl>(model->site_transform(site));
        if (!q) continue;
        const quant::Deployed d = q->deployed();
        json entry{{"quantizer", q->quantizer_name()}};
        if (!d.options.empty()) entry["options"] = d.options;
        sites[site] = entry;
        for (const auto & [param, value] : d.tensors) add_f32(out, site + "." + param, value.flatten());
    }

    out.set_metadata("format", "bitvit-packed");
    // The oldest version that can hold this file, so older runtimes read what they can: 1 is F32
    // only, 2 adds F16 storage, 3 blocks without linear biases, 4 Swin (docs/format.md).
    const int version = swin ? 4 : !architecture.at("linear_bias").get<bool>() ? 3 : options.half_storage ? 2 : 1;
    out.set_metadata("format_version", std::to_string(version));
    out.set_metadata("architecture", architecture.dump());
    out.set_metadata("preprocess", json{{"mean", options.mean}, {"std", options.std}}.dump());
    out.set_metadata("method", options.method);
    out.set_metadata("sites", sites.dump());
    if (!options.class_names.empty()) {
        if (static_cast<int64_t>(options.class_names.size()) != num_classes) {
            throw std::invalid_argument("export: " + std::to_string(options.class_names.size()) + " class names for a model of " +
                                        std::to_string(num_classes) + " classes");
        }
        out.set_metadata("class_names", json(options.class_names).dump());
    }
    // Last: the digest of everything above, so a changed byte anywhere is refused (docs/format.md).
    out.set_metadata("checksum", "sha256:" + out.content_digest("checksum"));
    // The runtime must accept what we write: check before the file replaces anything.
    const std::vector<uint8_t> bytes = out.serialize();
    summary.file_bytes = static_cast<int64_t>(bytes.size());
    runtime::PackedModel::from_file(format::SafetensorsFile::parse(bytes, path));
    out.write(path);
    return summary;
}

}  // namespace bitvit
