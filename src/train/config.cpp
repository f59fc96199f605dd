#include "config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace bitvit {

static TrainConfig parse_config_table(toml::table root, const std::string & origin, const std::vector<std::string> & overrides);

namespace {

// The "section.key" names that --set overrides gave, while a config is being parsed (messages name
// --set as the source of a bad key).
thread_local const std::set<std::string> * g_overridden = nullptr;

// Reads the keys of one [section], remembering which it consumed so that unknown keys (typos) fail.
class SectionReader {
  public:
    SectionReader(const toml::table & root, std::string section, std::string origin)
        : section_(std::move(section)), origin_(std::move(origin)) {
        if (const auto * node = root.get(section_)) {
            table_ = node->as_table();
            if (table_ == nullptr) fail(section_, "must be a table");
        }
    }
    // Reads a table found elsewhere (an element of [[stage]], a stage's [stage.optim]); `label`
    // names it in errors.
    SectionReader(const toml::table * table, std::string label, std::string origin)
        : table_(table), section_(std::move(label)), origin_(std::move(origin)) {}

    // A nested table, or nullptr when absent.
    const toml::table * subtable(const char * key) {
        const toml::node * node = find(key);
        if (node == nullptr) return nullptr;
        if (!node->is_table()) fail(key, "must be a table");
        return node->as_table();
    }
    const std::string & label() const { return section_; }

    void read(const char * key, std::string & out) {
        if (const auto * node = find(key)) {
            const auto v = node->value<std::string>();
            if (!v) fail(key, "must be a string");
            out = *v;
        }
    }
    void read(const char * key, bool & out) {
        if (const auto * node = find(key)) {
            const auto v = node->value_exact<bool>();
            if (!v) fail(key, "must be true or false");
            out = *v;
        }
    }
    void read(const char * key, int64_t & out) {
        if (const auto * node = find(key)) {
            const auto v = node->value_exact<int64_t>();
            if (!v) fail(key, "must be an integer");
            out = *v;
        }
    }
    void read(const char * key, uint64_t & out) {
        int64_t v = static_cast<int64_t>(out);
        read(key, v);
        if (v < 0) fail(key, "must not be negative");
        out = static_cast<uint64_t>(v);
    }
    void read(const char * key, double & out) {
        if (const auto * node = find(key)) {
            const auto v = node->value<double>();  // integers are accepted as doubles
            if (!v) fail(key, "must be a number");
            out = *v;
        }
    }
    void read(const char * key, std::vector<double> & out) {
        if (const auto * node = find(key)) {
            if (const auto single = node->value<double>()) {  // one number: a one-element array
                out = {*single};
                return;
            }
            const auto * array = node->as_array();
            if (array == nullptr) fail(key, "must be an array of numbers");
            out.clear();
            for (const auto & element : *array) {
                const auto v = element.value<double>();
                if (!v) fail(key, "must be an array of numbers");
                out.push_back(*v);
            }
        }
    }

    void read(const char * key, std::vector<int64_t> & out) {
        if (const auto * node = find(key)) {
            const auto * array = node->as_array();
            if (array == nullptr) fail(key, "must be an array of integers");
            out.clear();
            for (const auto & element : *array) {
                const auto v = element.value_exact<int64_t>();
                if (!v) fail(key, "must be an array of integers");
                out.push_back(*v);
            }
        }
    }

    // Throws if the section holds keys that no read() asked for, naming where the key came from (the
    // recipe or a --set) and the known keys nearest to it.
    void finish() const {
        if (table_ == nullptr) return;
        for (const auto & [key, node] : *table_) {
            const std::string k(key.str());
            if (consumed_.count(k)) continue;
            std::string near;
            for (const auto & known : consumed_) {
                if (edit_distance(k, known) <= std::max<size_t>(2, k.size() / 3)) near += (near.empty() ? "" : ", ") + section_ + "." + known;
            }
            const std::string hint = near.empty() ? " (known: " + known_list() + ")" : " (did you mean " + near + "?)";
            const std::string full = section_ + "." + k;
            if (g_overridden && g_overridden->count(full)) throw ConfigError("--set " + full + ": not a known setting" + hint);
            fail(k, "is not a known setting" + hint);
        }
    }

    [[noreturn]] void fail(const std::string & key, const std::string & what) const {
        const std::string where = key == section_ ? section_ : section_ + "." + key;
        throw ConfigError(origin_ + ": " + where + " " + what);
    }

    void check(bool ok, const char * key, const std::string & what) const {
        if (!ok) fail(key, what);
    }

  private:
    std::string known_list() const {
        std::string out;
        for (const auto & k : consumed_) out += (out.empty() ? "" : ", ") + k;
        return out;
    }
    static size_t edit_distance(const std::string & a, const std::string & b) {
        std::vector<size_t> row(b.size() + 1);
        for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
        for (size_t i = 1; i <= a.size(); ++i) {
            size_t diagonal = row[0];
            row[0] = i;
            for (size_t j = 1; j <= b.size(); ++j) {
                const size_t up = row[j];
                row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
                diagonal = up;
            }
        }
        return row[b.size()];
    }

    const toml::node * find(const char * key) {
        consumed_.insert(key);
        return table_ == nullptr ? nullptr : table_->get(key);
    }

    const toml::table * table_ = nullptr;
    std::string section_, origin_;
    std::set<std::string> consumed_;
};

// Applies one "section.key=value" override to the parsed table.
void apply_override(toml::table & root, const std::string & assignment) {
    const auto eq = assignment.find('=');
    const auto dot = assignment.find('.');
    if (eq == std::string::npos || dot == std::string::npos || dot > eq) {
        throw ConfigError("override '" + assignment + "' must look like section.key=value");
    }
    const std::string section = assignment.substr(0, dot);
    const std::string key = assignment.substr(dot + 1, eq - dot - 1);
    const std::string value_text = assignment.substr(eq + 1);
    if (section.empty() || key.empty() || key.find('.') != std::string::npos) {
        throw ConfigError("override '" + assignment + "' must look like section.key=value");
    }
    toml::table parsed;
    try {
        parsed = toml::parse("v = " + value_text);
    } catch (const toml::parse_error &) {
        parsed.insert_or_assign("v", value_text);  // a bare word: take it as a string
    }
    if (!root.contains(section)) root.insert(section, toml::table{});
    auto * table = root.get(section)->as_table();
    if (table == nullptr) throw ConfigError("override '" + assignment + "': " + section + " is not a table");
    table->insert_or_assign(key, *parsed.get("v"));
}

void check_known_sections(const toml::table & root, const std::string & origin) {
    static const std::set<std::string> known = {"model", "data", "optim", "train", "stage"};
    for (const auto & [key, node] : root) {
        if (!known.count(std::string(key.str()))) {
            throw ConfigError(origin + ": unknown section [" + std::string(key.str()) +
                              "] (known: model, data, optim, train, stage)");
        }
    }
}

// The block-variant keys, shared by [model] and [stage.model].
void read_variant(SectionReader & r, BlockVariant & v) {
    r.read("qk_norm", v.qk_norm);
    r.read("softmax", v.softmax);
    r.read("qkv_shift", v.qkv_shift);
    r.read("attn_bias", v.attn_bias);
    r.read("mlp_clip", v.mlp_clip);
    r.read("mlp_act", v.mlp_act);
    r.read("linear_bias", v.linear_bias);
    r.check(std::isfinite(v.mlp_clip) && v.mlp_clip >= 0, "mlp_clip", "must be >= 0 (0 = off)");
    r.check(v.mlp_act == "gelu" || v.mlp_act == "relu" || v.mlp_act == "rprelu", "mlp_act",
            "must be \"gelu\", \"relu\" or \"rprelu\"");
}

toml::table variant_table(const BlockVariant & v) {
    return toml::table{{"qk_norm", v.qk_norm},     {"softmax", v.softmax},   {"qkv_shift", v.qkv_shift},
                       {"attn_bias", v.attn_bias}, {"mlp_clip", v.mlp_clip}, {"mlp_act", v.mlp_act},
                       {"linear_bias", v.linear_bias}};
}

void read_optim(SectionReader & optim, OptimSection & o) {
    optim.read("optimizer", o.optimizer);
    optim.read("lr", o.lr);
    optim.read("min_lr", o.min_lr);
    optim.read("warmup_lr", o.warmup_lr);
    optim.read("warmup_epochs", o.warmup_epochs);
    optim.read("weight_decay", o.weight_decay);
    optim.read("beta1", o.beta1);
    optim.read("beta2", o.beta2);
    optim.read("eps", o.eps);
    optim.read("label_smoothing", o.label_smoothing);
    optim.read("clip_grad", o.clip_grad);
    optim.finish();
    optim.check(o.optimizer == "adamw" || o.optimizer == "adam", "optimizer",
                "must be \"adamw\" or \"adam\", not \"" + o.optimizer + "\"");
    const auto finite_nonneg = [](double v) { return std::isfinite(v) && v >= 0; };
    optim.check(std::isfinite(o.lr) && o.lr > 0 && o.lr <= 10, "lr", "must be a number in (0, 10]");
    optim.check(finite_nonneg(o.min_lr) && o.min_lr <= o.lr, "min_lr", "must be in [0, lr]");
    optim.check(finite_nonneg(o.warmup_lr), "warmup_lr", "must be a non-negative number");
    optim.check(finite_nonneg(o.warmup_epochs), "warmup_epochs", "must be a non-negative number");
    optim.check(finite_nonneg(o.weight_decay), "weight_decay", "must be a non-negative number");
    optim.check(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "beta1", "and beta2 must be in [0, 1)");
    optim.check(std::isfinite(o.eps) && o.eps > 0, "eps", "must be positive");
    optim.check(o.label_smoothing >= 0 && o.label_smoothing < 1, "label_smoothing", "must be in [0, 1)");
    optim.check(finite_nonneg(o.clip_grad), "clip_grad", "must be a non-negative number (0 = off)");
}

// [[stage]] element `index`: its name, length, start point, optimiser overrides, quantizer map and
// distillation.
// train.epoch_scale applied to one stage: its epochs scaled and rounded (at least 1), and its
// warm-up by the same factor as the epochs actually were, so a shortened run keeps the schedule's
// shape (a 1-epoch warm-up would otherwise fill a 20-epoch stage scaled to 1 epoch).
void scale_epochs(int64_t & epochs, OptimSection & optim, double scale) {
    if (scale == 1.0) return;
    const int64_t scaled = std::max<int64_t>(1, std::llround(static_cast<double>(epochs) * scale));
    optim.warmup_epochs *= static_cast<double>(scaled) / static_cast<double>(epochs);
    epochs = scaled;
}

// Adds `more` to a stage's quantizer map: an entry for a pattern already present replaces it (so
// "fp" removes an inherited quantizer), a new pattern is appended.
void merge_quantizers(std::vector<QuantizerAssignment> & map, std::vector<QuantizerAssignment> more) {
    for (auto & a : more) {
        auto same = std::find_if(map.begin(), map.end(), [&](const QuantizerAssignment & b) { return b.pattern == a.pattern; });
        if (same != map.end()) {
            *same = std::move(a);
        } else {
            map.push_back(std::move(a));
        }
    }
}

// A stage's [stage.quantizers] table: pattern -> name, or { name = ..., options }.
std::vector<QuantizerAssignment> read_quantizers(const toml::table & quantizers, const std::string & label, const std::string & origin) {
    std::vector<QuantizerAssignment> out;
    for (const auto & [key, node] : quantizers) {
        const std::string where = label + ".quantizers." + std::string(key.str());
        QuantizerAssignment a;
        a.pattern = std::string(key.str());
        if (const auto name = node.value<std::string>()) {
            a.quantizer = *name;  // "site" = "sign"
        } else if (const toml::table * spec = node.as_table()) {
            for (const auto & [opt, value] : *spec) {
                if (opt.str() == "name") {
                    const auto name = value.value<std::string>();
                    if (!name) throw ConfigError(origin + ": " + where + ".name must be a string");
                    a.quantizer = *name;
                } else if (const auto b = value.value_exact<bool>()) {
                    a.options[std::string(opt.str())] = *b ? 1.0 : 0.0;
                } else if (const auto v = value.value<double>()) {
                    a.options[std::string(opt.str())] = *v;
                } else {
                    throw ConfigError(origin + ": " + where + "." + std::string(opt.str()) + " must be a number or boolean");
                }
            }
            if (a.quantizer.empty()) throw ConfigError(origin + ": " + where + " needs name = \"<quantizer>\"");
        } else {
            throw ConfigError(origin + ": " + where + " must be a quantizer name or { name = ..., options }");
        }
        out.push_back(std::move(a));
    }
    return out;
}

void read_distill(SectionReader & d, DistillSection & out) {
    d.read("teacher", out.teacher);
    d.read("kind", out.kind);
    d.read("alpha", out.alpha);
    d.read("tau", out.tau);
    d.read("attn_mse", out.attn_mse);
    d.read("hidden_mse", out.hidden_mse);
    d.read("dmd", out.dmd);
    d.read("rank", out.rank);
    d.read("rank_top_k", out.rank_top_k);
    d.read("rank_tau", out.rank_tau);
    d.finish();
    const std::pair<const char *, double> weights[] = {
        {"attn_mse", out.attn_mse}, {"hidden_mse", out.hidden_mse}, {"dmd", out.dmd}, {"rank", out.rank}};
    for (const auto & [key, w] : weights) d.check(std::isfinite(w) && w >= 0 && w <= 1e6, key, "must be a weight in [0, 1e6]");
    d.check(out.rank_top_k >= 2 && out.rank_top_k <= 65536, "rank_top_k", "must be in [2, 65536]");
    d.check(std::isfinite(out.rank_tau) && out.rank_tau > 0, "rank_tau", "must be positive");
    d.check(out.kind == "none" || out.kind == "distribution" || out.kind == "hard" || out.kind == "soft", "kind",
            "must be none, distribution, hard or soft, not \"" + out.kind + "\"");
    d.check(!out.uses_teacher() || !out.teacher.empty(), "teacher", "is required for distillation");
    d.check(out.alpha >= 0 && out.alpha <= 1, "alpha", "must be in [0, 1]");
    d.check(std::isfinite(out.tau) && out.tau > 0, "tau", "must be positive");
}

// A stage's [model] (block variant), [optim], [quantizers] and [distill] tables read onto `st`.
void read_stage_tables(SectionReader & r, const std::string & origin, StageSection & st) {
    if (const toml::table * model = r.subtable("model")) {
        SectionReader m(model, r.label() + ".model", origin);
        read_variant(m, st.variant);
        m.finish();
    }
    if (const toml::table * optim = r.subtable("optim")) {
        SectionReader o(optim, r.label() + ".optim", origin);
        read_optim(o, st.optim);
    }
    if (const toml::table * quantizers = r.subtable("quantizers")) merge_quantizers(st.quantizers, read_quantizers(*quantizers, r.label(), origin));
    if (const toml::table * distill = r.subtable("distill")) {
        SectionReader d(distill, r.label() + ".distill", origin);
        read_distill(d, st.distill);
    }
}

// [[stage]] element `index`. With extends = "previous" it starts as a copy of the previous stage
// (optimiser, block variant, quantizer map, distillation) and its own tables add to or override
// that; otherwise from the top-level [optim] and [model] with no quantizers.
StageSection read_stage(const toml::table * table, size_t index, const TrainConfig & base, const StageSection * previous,
                        const std::string & origin) {
    SectionReader r(table, "stage[" + std::to_string(index) + "]", origin);
    std::string extends;
    r.read("extends", extends);
    r.check(extends.empty() || extends == "previous", "extends", "must be \"previous\" (or absent)");
    r.check(extends.empty() || previous != nullptr, "extends", "= \"previous\" needs a stage before this one");
    StageSection st;
    if (!extends.empty()) {
        st = *previous;
        st.init = "previous";
    } else {
        st.optim = base.optim;
        st.variant = base.model.variant;
    }
    st.name = "stage" + std::to_string(index + 1);
    st.epochs = 0;
    r.read("name", st.name);
    r.read("epochs", st.epochs);
    r.read("init", st.init);
    r.check(st.epochs >= 1 && st.epochs <= 100000, "epochs", "must be in [1, 100000]");
    r.check(!st.init.empty(), "init", "must be \"scratch\", \"previous\" or a checkpoint path");
    read_stage_tables(r, origin, st);
    if (const toml::table * swin = r.subtable("swin")) {
        // What the method does differently on a Swin (docs/training.md, "Recipes"): read on a copy
        // whatever the model, so a DeiT run checks it too, and kept only for a Swin.
        SectionReader on_swin(swin, r.label() + ".swin", origin);
        StageSection swin_stage = st;
        read_stage_tables(on_swin, origin, swin_stage);
        on_swin.finish();
        if (spec::is_swin_name(base.model.name)) st = swin_stage;
    }
    r.finish();
    return st;
}

}  // namespace

namespace {

toml::table parse_toml(const std::string & text, const std::string & origin) {
    try {
        return toml::parse(text, origin);
    } catch (const toml::parse_error & e) {
        std::ostringstream msg;
        msg << origin << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
        throw ConfigError(msg.str());
    }
}

std::string read_text(const std::string & path, const std::string & what) {
    std::ifstream in(path);
    if (!in) throw ConfigError(path + ": cannot read " + what);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// `over` merged onto `under`: tables key by key, recursively; anything else (values, arrays —
// [[stage]] lists included) replaced whole.
void merge_tables(toml::table & under, const toml::table & over) {
    for (const auto & [key, node] : over) {
        toml::node * existing = under.get(key);
        if (existing && existing->is_table() && node.is_table()) {
            merge_tables(*existing->as_table(), *node.as_table());
        } else {
            under.insert_or_assign(key, node);
        }
    }
}

// A recipe file with its `base = "other.toml"` chain resolved (paths relative to the file naming
// them): the base's settings, then this file's on top.
toml::table load_recipe_table(const std::string & path, int depth) {
    if (depth > 8) throw ConfigError(path + ": recipe bases nest more than 8 deep (a cycle?)");
    toml::table root = parse_toml(read_text(path, "recipe file"), path);
    const toml::node * base = root.get("base");
    if (!base) return root;
    const auto base_name = base->value<std::string>();
    if (!base_name) throw ConfigError(path + ": base must be a file name (a recipe to start from)");
    const std::string base_path = (std::filesystem::path(path).parent_path() / *base_name).string();
    toml::table merged = load_recipe_table(base_path, depth + 1);
    root.erase("base");
    merge_tables(merged, root);
    return merged;
}

}  // namespace

TrainConfig parse_config(const std::string & toml_text, const std::string & origin,
                         const std::vector<std::string> & overrides) {
    toml::table root = parse_toml(toml_text, origin);
    if (root.contains("base")) throw ConfigError(origin + ": base = ... is resolved only in recipe files (bitvit train --recipe)");
    return parse_config_table(std::move(root), origin, overrides);
}

namespace {

void read_model_section(const toml::table & root, const std::string & origin, ModelSection & m) {
    SectionReader model(root, "model", origin);
    model.read("name", m.name);
    model.read("drop_path", m.drop_path);
    model.read("embed_dim", m.embed_dim);
    model.read("depth", m.depth);
    model.read("num_heads", m.num_heads);
    model.read("img_size", m.img_size);
    model.read("patch_size", m.patch_size);
    model.read("mlp_ratio", m.mlp_ratio);
    model.read("depths", m.depths);
    model.read("stage_heads", m.stage_heads);
    model.read("window_size", m.window_size);
    read_variant(model, m.variant);
    model.finish();
    model.check(m.drop_path >= 0 && m.drop_path < 1, "drop_path", "must be in [0, 1)");
    // The runtime's limits (spec/architecture.cpp): a model it could not load is refused here.
    model.check(m.embed_dim >= 0 && m.embed_dim <= 16384, "embed_dim", "must be in [0, 16384] (0 = the architecture's)");
    model.check(m.depth >= 0 && m.depth <= 256, "depth", "must be in [0, 256] (0 = the architecture's)");
    model.check(m.num_heads >= 0 && m.num_heads <= 1024, "num_heads", "must be in [0, 1024] (0 = the architecture's)");
    model.check(m.img_size >= 0 && m.img_size <= 4096, "img_size", "must be in [0, 4096] (0 = the architecture's)");
    model.check(m.patch_size >= 0 && m.patch_size <= 256, "patch_size", "must be in [0, 256] (0 = the architecture's)");
    model.check(m.mlp_ratio == 0 || (m.mlp_ratio >= 0.25 && m.mlp_ratio <= 16), "mlp_ratio",
                "must be 0 (the architecture's) or in [0.25, 16]");
    model.check(m.depths.size() <= 8, "depths", "lists at most 8 stages");
    for (const int64_t d : m.depths) model.check(d >= 1 && d <= 64, "depths", "must be stage depths in [1, 64]");
    model.check(m.stage_heads.size() <= 8, "stage_heads", "lists at most 8 stages");
    for (const int64_t h : m.stage_heads) model.check(h >= 1 && h <= 1024, "stage_heads", "must be head counts in [1, 1024]");
    model.check(m.window_size >= 0 && m.window_size <= 64, "window_size", "must be in [0, 64] (0 = the architecture's)");
}

void read_data_section(const toml::table & root, const std::string & origin, DataSection & d) {
    SectionReader data(root, "data", origin);
    data.read("name", d.name);
    data.read("root", d.root);
    data.read("image_size", d.image_size);
    data.read("crop_pct", d.crop_pct);
    data.read("train_subset", d.train_subset);
    data.read("test_subset", d.test_subset);
    data.read("crop_padding", d.crop_padding);
    data.read("resized_crop_scale", d.resized_crop_scale);
    data.read("hflip", d.hflip);
    data.read("random_erase", d.random_erase);
    data.read("mean", d.mean);
    data.read("std", d.std);
    data.read("prefetch", d.prefetch);
    data.finish();
    data.check(d.image_size >= 0 && d.image_size <= 4096, "image_size", "must be in [0, 4096] (0 = the model's)");
    data.check(d.crop_pct == 0 || (d.crop_pct >= 0.1 && d.crop_pct <= 1), "crop_pct",
               "must be 0 (resize whole images) or in [0.1, 1] (resize the shorter side to image_size / crop_pct, centre crop)");
    data.check(d.train_subset >= 0, "train_subset", "must not be negative");
    data.check(d.test_subset >= 0, "test_subset", "must not be negative");
    data.check(d.crop_padding >= 0 && d.crop_padding <= 64, "crop_padding", "must be in [0, 64]");
    data.check(d.resized_crop_scale == 0 || (d.resized_crop_scale >= 0.01 && d.resized_crop_scale <= 1), "resized_crop_scale",
               "must be 0 (off) or in [0.01, 1] (the smallest area share of a RandomResizedCrop; timm: 0.08)");
    data.check(d.random_erase >= 0 && d.random_erase <= 1, "random_erase", "must be a probability in [0, 1]");
    data.check(d.prefetch >= 1 && d.prefetch <= 64, "prefetch", "must be in [1, 64]");
    data.check(!d.mean.empty() && d.mean.size() == d.std.size() && d.mean.size() <= 64, "mean",
               "and data.std must be non-empty and of equal length (one value per channel)");
    // Pixels are in [0, 1]: the packed format's limits (docs/format.md), so every trained model exports.
    for (double m : d.mean) data.check(std::isfinite(m) && m >= -16 && m <= 16, "mean", "values must be numbers in [-16, 16]");
    for (double s : d.std) data.check(std::isfinite(s) && s >= 1e-3 && s <= 1e3, "std", "values must be numbers in [0.001, 1000]");
}

void read_train_section(const toml::table & root, const std::string & origin, TrainSection & t) {
    SectionReader train(root, "train", origin);
    train.read("epochs", t.epochs);
    train.read("batch_size", t.batch_size);
    train.read("eval_batch_size", t.eval_batch_size);
    train.read("seed", t.seed);
    train.read("threads", t.threads);
    train.read("log_every", t.log_every);
    train.read("fp_checkpoint", t.fp_checkpoint);
    train.read("epoch_scale", t.epoch_scale);
    train.read("data_parallel", t.data_parallel);
    train.finish();
    train.check(t.epochs >= 1 && t.epochs <= 100000, "epochs", "must be in [1, 100000]");
    train.check(t.batch_size >= 1 && t.batch_size <= 65536, "batch_size", "must be in [1, 65536]");
    train.check(t.eval_batch_size >= 1 && t.eval_batch_size <= 65536, "eval_batch_size", "must be in [1, 65536]");
    train.check(t.threads >= 0 && t.threads <= 1024, "threads", "must be in [0, 1024] (0 = all cores)");
    train.check(t.log_every >= 1, "log_every", "must be at least 1");
    train.check(std::isfinite(t.epoch_scale) && t.epoch_scale > 0 && t.epoch_scale <= 1000, "epoch_scale", "must be in (0, 1000]");
    train.check(t.data_parallel >= 1 && t.data_parallel <= 4096, "data_parallel", "must be in [1, 4096] (the number of ranks)");
    train.check(t.batch_size % t.data_parallel == 0, "data_parallel",
                "must divide train.batch_size " + std::to_string(t.batch_size) + " (every rank takes an equal share of each batch)");
}

// The [[stage]] list (or the implicit single stage), with train.epoch_scale applied.
void read_stages(const toml::table & root, const std::string & origin, TrainConfig & c) {
    if (const toml::node * stages = root.get("stage")) {
        const toml::array * array = stages->as_array();
        if (array == nullptr || array->empty()) throw ConfigError(origin + ": stage must be an array of [[stage]] tables");
        for (size_t i = 0; i < array->size(); ++i) {
            const toml::table * table = (*array)[i].as_table();
            if (table == nullptr) throw ConfigError(origin + ": stage[" + std::to_string(i) + "] must be a table");
            c.stages.push_back(read_stage(table, i, c, c.stages.empty() ? nullptr : &c.stages.back(), origin));
        }
        // After all are read, so a stage that extends its predecessor copies the unscaled schedule.
        for (auto & st : c.stages) scale_epochs(st.epochs, st.optim, c.train.epoch_scale);
        c.staged = true;
    } else {
        StageSection only;
        scale_epochs(c.train.epochs, c.optim, c.train.epoch_scale);
        only.epochs = c.train.epochs;
        only.optim = c.optim;
        only.variant = c.model.variant;
        c.stages.push_back(only);
    }
    c.train.epoch_scale = 1.0;  // applied: the stored config holds the scaled epochs
}

}  // namespace

static TrainConfig parse_config_table(toml::table root, const std::string & origin, const std::vector<std::string> & overrides) {
    std::set<std::string> overridden;
    for (const auto & o : overrides) {
        apply_override(root, o);
        overridden.insert(o.substr(0, o.find('=')));
    }
    struct Scope {
        explicit Scope(const std::set<std::string> * s) { g_overridden = s; }
        ~Scope() { g_overridden = nullptr; }
    } scope(&overridden);
    check_known_sections(root, origin);
    TrainConfig c;
    read_model_section(root, origin, c.model);
    read_data_section(root, origin, c.data);
    SectionReader optim(root, "optim", origin);
    read_optim(optim, c.optim);
    read_train_section(root, origin, c.train);
    read_stages(root, origin, c);
    return c;
}

int64_t TrainConfig::total_epochs() const {
    int64_t total = 0;
    for (const auto & s : stages) total += s.epochs;
    return total;
}

TrainConfig load_config_file(const std::string & path, const std::vector<std::string> & overrides) {
    return parse_config_table(load_recipe_table(path, 0), path, overrides);
}

namespace {
toml::table optim_table(const OptimSection & o) {
    return toml::table{{"optimizer", o.optimizer},
                       {"lr", o.lr},
                       {"min_lr", o.min_lr},
                       {"warmup_lr", o.warmup_lr},
                       {"warmup_epochs", o.warmup_epochs},
                       {"weight_decay", o.weight_decay},
                       {"beta1", o.beta1},
                       {"beta2", o.beta2},
                       {"eps", o.eps},
                       {"label_smoothing", o.label_smoothing},
                       {"clip_grad", o.clip_grad}};
}
}  // namespace

std::string TrainConfig::to_toml() const {
    auto numbers = [](const std::vector<double> & values) {
        toml::array a;
        for (double v : values) a.push_back(v);
        return a;
    };
    auto integers = [](const std::vector<int64_t> & values) {
        toml::array a;
        for (int64_t v : values) a.push_back(v);
        return a;
    };
    toml::table model_table{{"name", model.name},
                            {"drop_path", model.drop_path},
                            {"embed_dim", model.embed_dim},
                            {"depth", model.depth},
                            {"num_heads", model.num_heads},
                            {"img_size", model.img_size},
                            {"patch_size", model.patch_size},
                            {"mlp_ratio", model.mlp_ratio},
                            {"depths", integers(model.depths)},
                            {"stage_heads", integers(model.stage_heads)},
                            {"window_size", model.window_size}};
    for (auto && [key, value] : variant_table(model.variant)) model_table.insert(key, value);
    toml::table root{
        {"model", model_table},
        {"data", toml::table{{"name", data.name},
                             {"root", data.root},
                             {"image_size", data.image_size},
                             {"crop_pct", data.crop_pct},
                             {"train_subset", data.train_subset},
                             {"test_subset", data.test_subset},
                             {"crop_padding", data.crop_padding},
                             {"resized_crop_scale", data.resized_crop_scale},
                             {"hflip", data.hflip},
                             {"random_erase", data.random_erase},
                             {"mean", numbers(data.mean)},
                             {"std", numbers(data.std)},
                             {"prefetch", data.prefetch}}},
        {"optim", optim_table(optim)},
        {"train", toml::table{{"epochs", train.epochs},
                              {"batch_size", train.batch_size},
                              {"eval_batch_size", train.eval_batch_size},
                              {"seed", static_cast<int64_t>(train.seed)},
                              {"threads", train.threads},
                              {"log_every", train.log_every},
                              {"epoch_scale", train.epoch_scale},
                              {"data_parallel", train.data_parallel},
                              {"fp_checkpoint", train.fp_checkpoint}}},
    };
    if (staged) {
        toml::array stage_array;
        for (const auto & st : stages) {
            toml::table quantizers;
            for (const auto & a : st.quantizers) {
                toml::table spec{{"name", a.quantizer}};
                for (const auto & [key, value] : a.options) spec.insert(key, value);
                quantizers.insert(a.pattern, spec);
            }
            stage_array.push_back(toml::table{
                {"name", st.name},
                {"epochs", st.epochs},
                {"init", st.init},
                {"optim", optim_table(st.optim)},
                {"model", variant_table(st.variant)},
                {"quantizers", quantizers},
                {"distill", toml::table{{"teacher", st.distill.teacher},
                                        {"kind", st.distill.kind},
                                        {"alpha", st.distill.alpha},
                                        {"tau", st.distill.tau},
                                        {"attn_mse", st.distill.attn_mse},
                                        {"hidden_mse", st.distill.hidden_mse},
                                        {"dmd", st.distill.dmd},
                                        {"rank", st.distill.rank},
                                        {"rank_top_k", st.distill.rank_top_k},
                                        {"rank_tau", st.distill.rank_tau}}},
            });
        }
        root.insert("stage", stage_array);
    }
    std::ostringstream out;
    out << root << "\n";
    return out.str();
}

}  // namespace bitvit
