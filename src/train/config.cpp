#include "config.h"

#include <toml++/toml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

namespace bitvit {
namespace {

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

    // Throws if the section holds keys that no read() asked for.
    void finish() const {
        if (table_ == nullptr) return;
        for (const auto & [key, node] : *table_) {
            if (!consumed_.count(std::string(key.str()))) fail(std::string(key.str()), "is not a known setting");
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
    static const std::set<std::string> known = {"model", "data", "optim", "train"};
    for (const auto & [key, node] : root) {
        if (!known.count(std::string(key.str()))) {
            throw ConfigError(origin + ": unknown section [" + std::string(key.str()) +
                              "] (known: model, data, optim, train)");
        }
    }
}

}  // namespace

TrainConfig parse_config(const std::string & toml_text, const std::string & origin,
                         const std::vector<std::string> & overrides) {
    toml::table root;
    try {
        root = toml::parse(toml_text, origin);
    } catch (const toml::parse_error & e) {
        std::ostringstream msg;
        msg << origin << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
        throw ConfigError(msg.str());
    }
    for (const auto & o : overrides) apply_override(root, o);
    check_known_sections(root, origin);

    TrainConfig c;
    SectionReader model(root, "model", origin);
    model.read("name", c.model.name);
    model.read("drop_path", c.model.drop_path);
    model.read("embed_dim", c.model.embed_dim);
    model.read("depth", c.model.depth);
    model.read("num_heads", c.model.num_heads);
    model.finish();
    model.check(c.model.drop_path >= 0 && c.model.drop_path < 1, "drop_path", "must be in [0, 1)");
    model.check(c.model.embed_dim >= 0 && c.model.depth >= 0 && c.model.num_heads >= 0, "embed_dim",
                "(and depth, num_heads) must not be negative");

    SectionReader data(root, "data", origin);
    data.read("name", c.data.name);
    data.read("root", c.data.root);
    data.read("image_size", c.data.image_size);
    data.read("train_subset", c.data.train_subset);
    data.read("test_subset", c.data.test_subset);
    data.read("crop_padding", c.data.crop_padding);
    data.read("hflip", c.data.hflip);
    data.read("mean", c.data.mean);
    data.read("std", c.data.std);
    data.read("prefetch", c.data.prefetch);
    data.finish();
    data.check(c.data.train_subset >= 0, "train_subset", "must not be negative");
    data.check(c.data.test_subset >= 0, "test_subset", "must not be negative");
    data.check(c.data.crop_padding >= 0, "crop_padding", "must not be negative");
    data.check(c.data.prefetch >= 1, "prefetch", "must be at least 1");
    data.check(!c.data.mean.empty() && c.data.mean.size() == c.data.std.size(), "mean",
               "and data.std must be non-empty and of equal length (one value per channel)");
    for (double s : c.data.std) data.check(std::isfinite(s) && s > 0, "std", "values must be positive");

    SectionReader optim(root, "optim", origin);
    optim.read("optimizer", c.optim.optimizer);
    optim.read("lr", c.optim.lr);
    optim.read("min_lr", c.optim.min_lr);
    optim.read("warmup_lr", c.optim.warmup_lr);
    optim.read("warmup_epochs", c.optim.warmup_epochs);
    optim.read("weight_decay", c.optim.weight_decay);
    optim.read("beta1", c.optim.beta1);
    optim.read("beta2", c.optim.beta2);
    optim.read("eps", c.optim.eps);
    optim.read("label_smoothing", c.optim.label_smoothing);
    optim.read("clip_grad", c.optim.clip_grad);
    optim.finish();
    optim.check(c.optim.optimizer == "adamw" || c.optim.optimizer == "adam", "optimizer",
                "must be \"adamw\" or \"adam\", not \"" + c.optim.optimizer + "\"");
    const auto finite_nonneg = [](double v) { return std::isfinite(v) && v >= 0; };
    optim.check(std::isfinite(c.optim.lr) && c.optim.lr > 0, "lr", "must be a positive number");
    optim.check(finite_nonneg(c.optim.min_lr) && c.optim.min_lr <= c.optim.lr, "min_lr", "must be in [0, lr]");
    optim.check(finite_nonneg(c.optim.warmup_lr), "warmup_lr", "must be a non-negative number");
    optim.check(finite_nonneg(c.optim.warmup_epochs), "warmup_epochs", "must be a non-negative number");
    optim.check(finite_nonneg(c.optim.weight_decay), "weight_decay", "must be a non-negative number");
    optim.check(c.optim.beta1 >= 0 && c.optim.beta1 < 1 && c.optim.beta2 >= 0 && c.optim.beta2 < 1, "beta1",
                "and beta2 must be in [0, 1)");
    optim.check(std::isfinite(c.optim.eps) && c.optim.eps > 0, "eps", "must be positive");
    optim.check(c.optim.label_smoothing >= 0 && c.optim.label_smoothing < 1, "label_smoothing", "must be in [0, 1)");
    optim.check(finite_nonneg(c.optim.clip_grad), "clip_grad", "must be a non-negative number (0 = off)");

    SectionReader train(root, "train", origin);
    train.read("epochs", c.train.epochs);
    train.read("batch_size", c.train.batch_size);
    train.read("eval_batch_size", c.train.eval_batch_size);
    train.read("seed", c.train.seed);
    train.read("threads", c.train.threads);
    train.read("log_every", c.train.log_every);
    train.finish();
    train.check(c.train.epochs >= 1, "epochs", "must be at least 1");
    train.check(c.train.batch_size >= 1, "batch_size", "must be at least 1");
    train.check(c.train.eval_batch_size >= 1, "eval_batch_size", "must be at least 1");
    train.check(c.train.threads >= 0, "threads", "must not be negative (0 = all cores)");
    train.check(c.train.log_every >= 1, "log_every", "must be at least 1");
    return c;
}

TrainConfig load_config_file(const std::string & path, const std::vector<std::string> & overrides) {
    std::ifstream in(path);
    if (!in) throw ConfigError(path + ": cannot read recipe file");
    std::stringstream text;
    text << in.rdbuf();
    return parse_config(text.str(), path, overrides);
}

std::string TrainConfig::to_toml() const {
    auto numbers = [](const std::vector<double> & values) {
        toml::array a;
        for (double v : values) a.push_back(v);
        return a;
    };
    toml::table root{
        {"model", toml::table{{"name", model.name},
                              {"drop_path", model.drop_path},
                              {"embed_dim", model.embed_dim},
                              {"depth", model.depth},
                              {"num_heads", model.num_heads}}},
        {"data", toml::table{{"name", data.name},
                             {"root", data.root},
                             {"image_size", data.image_size},
                             {"train_subset", data.train_subset},
                             {"test_subset", data.test_subset},
                             {"crop_padding", data.crop_padding},
                             {"hflip", data.hflip},
                             {"mean", numbers(data.mean)},
                             {"std", numbers(data.std)},
                             {"prefetch", data.prefetch}}},
        {"optim", toml::table{{"optimizer", optim.optimizer},
                              {"lr", optim.lr},
                              {"min_lr", optim.min_lr},
                              {"warmup_lr", optim.warmup_lr},
                              {"warmup_epochs", optim.warmup_epochs},
                              {"weight_decay", optim.weight_decay},
                              {"beta1", optim.beta1},
                              {"beta2", optim.beta2},
                              {"eps", optim.eps},
                              {"label_smoothing", optim.label_smoothing},
                              {"clip_grad", optim.clip_grad}}},
        {"train", toml::table{{"epochs", train.epochs},
                              {"batch_size", train.batch_size},
                              {"eval_batch_size", train.eval_batch_size},
                              {"seed", static_cast<int64_t>(train.seed)},
                              {"threads", train.threads},
                              {"log_every", train.log_every}}},
    };
    std::ostringstream out;
    out << root << "\n";
    return out.str();
}

}  // namespace bitvit
