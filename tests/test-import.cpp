// bitvit import / export --timm against models made by timm itself (tests/data/timm-reference): the
// imported model's logits equal timm's, the export gives back the imported tensors, the adaptations
// are exact where an exact statement exists, an adapted model fine-tunes, and every kind of bad file
// is refused with its name and the tensor at fault.
#include <gtest/gtest.h>

#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <tuple>

#include "expect-error.h"
#include "temp-dir.h"
#include "format/safetensors.h"
#include "format/torch-pickle.h"
#include "require-data.h"
#include "train/checkpoint.h"
#include "train/import.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace bitvit;

namespace {

const std::string kReference = std::string(BITVIT_SOURCE_DIR) + "/tests/data/timm-reference/";

using bitvit::test_util::TempDir;

torch::Tensor io_tensor(const std::string & model, const std::string & name) {
    const auto file = format::SafetensorsFile::load(kReference + model + ".io.safetensors");
    const auto & info = file.info(name);
    return torch::from_blob(const_cast<uint8_t *>(file.data(name)), info.shape, torch::kFloat).clone();
}

torch::Tensor logits(const std::string & checkpoint, const torch::Tensor & input) {
    LoadedModel m = load_model(checkpoint);
    torch::NoGradGuard no_grad;
    return m.model->forward(input);
}

spec::DeitConfig config_of(const ImportSummary & s) { return as_deit(s.model, "test")->config(); }

ImportOptions heads3() {
    ImportOptions o;
    o.num_heads = 3;  // the reference models' width (48) is not a registered DeiT's
    return o;
}

template <class F>
void expect_import_error(F run, std::initializer_list<std::string> expected) {
    test_util::expect_error<ImportError>(run, expected);
}

// A safetensors copy of the reference model with `edit` applied to its tensor map.
std::string edited_safetensors(const TempDir & dir, const std::string & name,
                               const std::function<void(std::map<std::string, torch::Tensor> &)> & edit) {
    std::map<std::string, torch::Tensor> tensors;
    for (const auto & item : read_state_dict(kReference + "deit_32_p4_d48_rgb.safetensors")) tensors[item.key()] = item.value();
    edit(tensors);
    format::SafetensorsWriter w;
    for (const auto & [key, t] : tensors) {
        w.add(key, format::DType::F32, t.sizes().vec(), t.data_ptr(), static_cast<size_t>(t.numel()) * 4);
    }
    w.write(dir.str(name));
    return dir.str(name);
}

// A zip archive as torch.save writes it ("<stem>/data.pkl", "<stem>/data/<key>") with these records.
std::string torch_save_archive(const TempDir & dir, const std::string & name, const std::vector<std::pair<std::string, std::string>> & records) {
    caffe2::serialize::PyTorchStreamWriter writer(dir.str(name));
    for (const auto & [record, bytes] : records) writer.writeRecord(record, bytes.data(), bytes.size());
    writer.writeEndOfFile();
    return dir.str(name);
}

// Pickle protocol 2 pieces (what torch.save writes).
std::string pstr(const std::string & s) {
    const auto n = static_cast<uint32_t>(s.size());
    return "X" + std::string(reinterpret_cast<const char *>(&n), 4) + s;
}
std::string pint(int32_t v) { return "J" + std::string(reinterpret_cast<const char *>(&v), 4); }

// {'w': tensor} whose storage "0" declares `numel` floats, viewed as `size` from `offset`.
std::string one_tensor_pickle(int32_t numel, int32_t offset, int32_t size) {
    return std::string("\x80\x02}(") + pstr("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + pstr("storage") + "ctorch\nFloatStorage\n" +
           pstr("0") + pstr("cpu") + pint(numel) + "tQ" + pint(offset) + "(" + pint(size) + "t(" + pint(1) +
           "t\x89" "ccollections\nOrderedDict\n)RtRu.";
}

}  // namespace

TEST(Import, TimmDeitLogitsMatchInBothFormats) {
    TempDir dir;
    for (const std::string model : {"deit_32_p4_d48_rgb", "deit_32_p4_d48_rgb_distilled"}) {
        const torch::Tensor input = io_tensor(model, "input"), expected = io_tensor(model, "logits");
        for (const std::string ext : {".safetensors", ".pth"}) {
            const std::string out = dir.str(model + ext + ".pt");
            const ImportSummary s = import_checkpoint(kReference + model + ext, heads3(), out);
            EXPECT_EQ(config_of(s).distilled, model.find("distilled") != std::string::npos);
            EXPECT_EQ(config_of(s).depth, 2);
            EXPECT_EQ(config_of(s).img_size, 32);
            EXPECT_EQ(s.found_at, ext == ".pth" ? "model" : "");
            const torch::Tensor got = logits(out, input);
            ASSERT_EQ(got.sizes(), expected.sizes());
            EXPECT_LE((got - expected).abs().max().item<float>(), 1e-5) << model << ext;
        }
    }
}

TEST(Import, BothFormatsReadTheSameTensors) {
    const auto a = read_state_dict(kReference + "deit_32_p4_d48_rgb.safetensors");
    const auto b = read_state_dict(kReference + "deit_32_p4_d48_rgb.pth");
    ASSERT_EQ(a.size(), b.size());
    for (const auto & item : a) {
        ASSERT_TRUE(b.contains(item.key())) << item.key();
        EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << item.key();
    }
}

TEST(Import, ExportTimmGivesBackTheImportedTensors) {
    TempDir dir;
    for (const std::string model : {"deit_32_p4_d48_rgb", "deit_32_p4_d48_rgb_distilled"}) {
        import_checkpoint(kReference + model + ".safetensors", heads3(), dir.str("m.pt"));
        export_timm(dir.str("m.pt"), dir.str("back.safetensors"));
        const auto original = read_state_dict(kReference + model + ".safetensors");
        const auto back = read_state_dict(dir.str("back.safetensors"));
        EXPECT_EQ(back.size(), original.size()) << model;
        for (const auto & item : original) {
            ASSERT_TRUE(back.contains(item.key())) << model << ": " << item.key();
            EXPECT_TRUE(torch::equal(item.value(), back[item.key()])) << model << ": " << item.key();
        }
        const auto file = format::SafetensorsFile::load(dir.str("back.safetensors"));
        EXPECT_EQ(file.metadata().at("format"), "pt");
        EXPECT_NE(file.metadata().at("bitvit.recipe").find("[model]"), std::string::npos);
    }
}

// A file PyTorch wrote (tests/data/torch-save/README.md): strided views, two tensors on one storage,
// F16 / BF16 / I64 storages, an OrderedDict's BUILD state, numbers, lists and None beside the model.
TEST(Import, TorchSaveViewsSharedStoragesAndDtypes) {
    std::string found_at;
    const auto sd = read_state_dict(std::string(BITVIT_SOURCE_DIR) + "/tests/data/torch-save/nested-views.pth", &found_at);
    EXPECT_EQ(found_at, "model");
    const torch::Tensor base = torch::arange(12, torch::kFloat);
    EXPECT_TRUE(torch::equal(sd["w"], base.reshape({3, 4}).slice(1, 1, 3).t()));
    EXPECT_TRUE(torch::equal(sd["shared"], base.slice(0, 4, 8)));
    EXPECT_TRUE(torch::equal(sd["half"], torch::tensor({0.5f, -2.0f, 65504.0f})));
    EXPECT_TRUE(torch::equal(sd["bf16"], torch::tensor({1.5f, -0.25f})));
    EXPECT_EQ(sd["index"].scalar_type(), torch::kLong);
    EXPECT_TRUE(torch::equal(sd["index"], torch::tensor({0, 7, 3, 2}, torch::kLong).reshape({2, 2})));
}

TEST(Import, ModulePrefixesAreRemoved) {
    TempDir dir;
    const std::string path = edited_safetensors(dir, "ddp.safetensors", [](auto & t) {
        std::map<std::string, torch::Tensor> prefixed;
        for (auto & [k, v] : t) prefixed["module." + k] = v;
        t = prefixed;
    });
    const auto sd = read_state_dict(path);
    EXPECT_TRUE(sd.contains("pos_embed"));
    EXPECT_FALSE(sd.contains("module.pos_embed"));
}

// RGB filters summed to one channel: a grey image fed as three equal channels to the original model
// and as one channel to the adapted model gives the same logits (up to the sums' rounding).
TEST(Import, ChannelAdaptationIsExactOnGreyImages) {
    TempDir dir;
    ImportOptions o = heads3();
    import_checkpoint(kReference + "deit_32_p4_d48_rgb.pth", o, dir.str("rgb.pt"));
    o.in_chans = 1;
    const ImportSummary s = import_checkpoint(kReference + "deit_32_p4_d48_rgb.pth", o, dir.str("grey.pt"));
    ASSERT_EQ(s.adaptations.size(), 1u);
    EXPECT_NE(s.adaptations[0].find("3 to 1 channel"), std::string::npos);
    torch::manual_seed(0);
    const torch::Tensor grey = torch::randn({4, 1, 32, 32});
    const torch::Tensor a = logits(dir.str("rgb.pt"), grey.expand({4, 3, 32, 32}).contiguous()), b = logits(dir.str("grey.pt"), grey);
    EXPECT_LE((a - b).abs().max().item<float>(), 1e-4);
}

// Resampling the position embedding keeps the prefix tokens, is the identity at the same grid, and
// keeps a constant embedding constant (bicubic weights sum to one).
TEST(Import, PositionEmbeddingResampling) {
    TempDir dir;
    ImportOptions o = heads3();
    o.img_size = 24;  // 8×8 -> 6×6 patches
    o.num_classes = 10;
    const ImportSummary s = import_checkpoint(kReference + "deit_32_p4_d48_rgb_distilled.pth", o, dir.str("small.pt"));
    EXPECT_EQ(s.adaptations.size(), 2u);
    const auto original = read_state_dict(kReference + "deit_32_p4_d48_rgb_distilled.pth");
    LoadedModel m = load_model(dir.str("small.pt"));
    ASSERT_EQ(as_deit(m.model, "test")->pos_embed.sizes(), (std::vector<int64_t>{1, 2 + 36, 48}));
    EXPECT_TRUE(torch::equal(as_deit(m.model, "test")->pos_embed.narrow(1, 0, 2), original["pos_embed"].narrow(1, 0, 2)));
    EXPECT_EQ(as_deit(m.model, "test")->head->weight.size(0), 10);
    EXPECT_EQ(m.state.shape.num_classes, 10);
    // The model runs at the new size.
    torch::NoGradGuard no_grad;
    EXPECT_EQ(m.model->forward(torch::zeros({2, 3, 24, 24})).sizes(), (std::vector<int64_t>{2, 10}));

    const std::string constant = edited_safetensors(dir, "const.safetensors", [](auto & t) { t["pos_embed"].fill_(0.375); });
    o.num_classes = 0;
    import_checkpoint(constant, o, dir.str("const.pt"));
    const torch::Tensor resampled = as_deit(load_model(dir.str("const.pt")).model, "test")->pos_embed;
    EXPECT_LE((resampled - 0.375).abs().max().item<float>(), 1e-6);
}

TEST(Import, DistillationTokenCanBeDropped) {
    TempDir dir;
    ImportOptions o = heads3();
    o.drop_distillation = true;
    const ImportSummary s = import_checkpoint(kReference + "deit_32_p4_d48_rgb_distilled.safetensors", o, dir.str("plain.pt"));
    EXPECT_FALSE(config_of(s).distilled);
    LoadedModel m = load_model(dir.str("plain.pt"));
    const auto original = read_state_dict(kReference + "deit_32_p4_d48_rgb_distilled.safetensors");
    EXPECT_EQ(as_deit(m.model, "test")->pos_embed.size(1), 65);
    EXPECT_TRUE(torch::equal(as_deit(m.model, "test")->pos_embed.narrow(1, 1, 64), original["pos_embed"].narrow(1, 2, 64)));
}

TEST(Import, ArchitectureIsCheckedAgainstANamedModel) {
    expect_import_error([] { import_checkpoint(kReference + "deit_32_p4_d48_rgb.pth", ImportOptions{"deit_tiny_patch16_224"}, "/nonexistent/x.pt"); },
                        {"deit_32_p4_d48_rgb.pth", "embed_dim 48", "deit_tiny_patch16_224 has 192"});
    expect_import_error([] { import_checkpoint(kReference + "deit_32_p4_d48_rgb.pth", ImportOptions{}, "/nonexistent/x.pt"); },
                        {"--num-heads"});
    expect_import_error([] { import_checkpoint(kReference + "swin_32_p2_w4_rgb.pth", ImportOptions{"deit_tiny_patch16_224"}, "/nonexistent/x.pt"); },
                        {"swin_32_p2_w4_rgb.pth", "holds a Swin", "--model deit_tiny_patch16_224 is a DeiT"});
    expect_import_error([] { import_checkpoint(kReference + "deit_32_p4_d48_rgb.pth", ImportOptions{"swin_tiny_patch4_window7_224"}, "/nonexistent/x.pt"); },
                        {"holds a DeiT", "is a Swin"});
    expect_import_error([] { import_checkpoint(kReference + "swin_32_p2_w4_rgb.pth", heads3(), "/nonexistent/x.pt"); },
                        {"--num-heads: a Swin's heads per stage are in its weights"});
}

TEST(Import, MissingMisshapenAndUnexpectedTensorsAreNamed) {
    TempDir dir;
    const std::string wrong = edited_safetensors(dir, "wrong.safetensors", [](auto & t) {
        t["blocks.1.mlp.fc2.weight"] = t["blocks.1.mlp.fc2.weight"].t().contiguous();
    });
    expect_import_error([&] { import_checkpoint(wrong, heads3(), dir.str("x.pt")); }, {"wrong.safetensors", "blocks.1.mlp.fc2.weight [192, 48]"});
    const std::string missing = edited_safetensors(dir, "missing.safetensors", [](auto & t) {
        t.erase("norm.bias");
        t["fc_norm.weight"] = torch::ones({48});
    });
    expect_import_error([&] { import_checkpoint(missing, heads3(), dir.str("x.pt")); },
                        {"missing.safetensors", "missing (1): norm.bias", "unexpected (1): fc_norm.weight"});
    // A headless file: refused until the head may be absent and the class count is given.
    const std::string headless = edited_safetensors(dir, "headless.safetensors", [](auto & t) {
        t.erase("head.weight");
        t.erase("head.bias");
    });
    expect_import_error([&] { import_checkpoint(headless, heads3(), dir.str("x.pt")); }, {"head.weight", "--num-classes"});
    ImportOptions o = heads3();
    o.num_classes = 5;
    o.allow_missing = {"head"};
    EXPECT_EQ(config_of(import_checkpoint(headless, o, dir.str("headless.pt"))).num_classes, 5);
    EXPECT_FALSE(fs::exists(dir.str("x.pt")));  // nothing is written for a refused import
}

TEST(Import, CorruptAndForeignFilesAreRefusedWithTheirName) {
    TempDir dir;
    for (const std::string ext : {".pth", ".safetensors"}) {
        const std::string cut = dir.str("cut" + ext);
        fs::copy_file(kReference + "deit_32_p4_d48_rgb" + ext, cut);
        fs::resize_file(cut, fs::file_size(cut) * 2 / 3);
        expect_import_error([&] { read_state_dict(cut); }, {cut});
    }
    std::ofstream(dir.str("junk.pth")) << "not a state dict";
    std::ofstream(dir.str("legacy.pth")) << std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 14) << "rest";
    expect_import_error([&] { read_state_dict(dir.str("legacy.pth")); }, {"legacy.pth", "legacy format"});
    expect_import_error([&] { read_state_dict(dir.str("junk.pth")); }, {"junk.pth"});
    // A zip that is not a torch.save archive, and a pickle that names code.
    const std::string other = torch_save_archive(dir, "other.zip", {{"readme.txt", "hello"}});
    expect_import_error([&] { read_state_dict(other); }, {"other.zip", "without data.pkl"});
    const std::string code = torch_save_archive(dir, "evil.pth", {{"data.pkl", std::string("\x80\x02" "cos\nsystem\n") + pstr("true") + "\x85R."}});
    expect_import_error([&] { read_state_dict(code); }, {"evil.pth", "os system"});
    const std::string args = torch_save_archive(
        dir, "args.pth", {{"data.pkl", std::string("\x80\x02}(") + pstr("args") + "cargparse\nNamespace\n)Ru."}});
    expect_import_error([&] { read_state_dict(args); }, {"args.pth", "argparse Namespace", "torch.save(checkpoint['model']"});
    // Storages smaller than they declare, and views reaching past their storage.
    const std::string floats(16, '\0');
    const std::string small = torch_save_archive(dir, "small.pth", {{"data.pkl", one_tensor_pickle(100, 0, 4)}, {"data/0", floats}});
    expect_import_error([&] { read_state_dict(small); }, {"small.pth", "'w'", "declares 100 elements"});
    const std::string past = torch_save_archive(dir, "past.pth", {{"data.pkl", one_tensor_pickle(4, 2, 4)}, {"data/0", floats}});
    expect_import_error([&] { read_state_dict(past); }, {"past.pth", "'w'", "past its storage"});
    const std::string fine = torch_save_archive(dir, "fine.pth", {{"data.pkl", one_tensor_pickle(4, 1, 3)}, {"data/0", floats}});
    EXPECT_EQ(read_state_dict(fine)["w"].sizes(), (std::vector<int64_t>{3}));
    const std::string nostorage = torch_save_archive(dir, "nostorage.pth", {{"data.pkl", one_tensor_pickle(4, 0, 4)}});
    expect_import_error([&] { read_state_dict(nostorage); }, {"nostorage.pth", "'w'", "not in the archive"});
    // bitvit's own checkpoint is not imported (it is used as it is).
    import_checkpoint(kReference + "deit_32_p4_d48_rgb.pth", heads3(), dir.str("own.pt"));
    expect_import_error([&] { read_state_dict(dir.str("own.pt")); }, {"own.pt", "LibTorch archive"});
}

// The imported, adapted model is a stage's init like any checkpoint, and it learns Fashion-MNIST.
// Both reference models, RGB 32 px with 7 classes, adapted to Fashion-MNIST (1 channel, 28 px, 10
// classes) and fine-tuned for 141 steps. Chance is 10 %; the DeiT reaches ~36 %, the Swin ~47 % (both
// single-threaded, so bit-reproducible); a head or an adaptation that broke the gradient path stays
// near chance.
TEST(Import, AnAdaptedImportFineTunesOnFashionMnist) {
    BITVIT_REQUIRE_FASHION_MNIST();
    TempDir dir;
    ImportOptions swin;
    swin.img_size = 28;  // a Swin's input size is not an adaptation: its weights do not hold one
    for (const auto & [file, base, adaptations] : {std::tuple{"deit_32_p4_d48_rgb.pth", heads3(), 3u},
                                                   std::tuple{"swin_32_p2_w4_rgb.pth", swin, 2u}}) {
        ImportOptions o = base;
        o.img_size = 28;
        o.in_chans = 1;
        o.num_classes = 10;
        o.mean = {0.2860};
        o.std = {0.3530};
        const std::string imported = dir.str(std::string(file) + ".pt");
        const ImportSummary s = import_checkpoint(kReference + file, o, imported);
        EXPECT_EQ(s.adaptations.size(), adaptations) << file;
        TrainConfig config = read_checkpoint_state(imported).config;
        config.data.train_subset = 3000;
        config.data.test_subset = 500;
        config.train.batch_size = 64;
        config.train.threads = 1;
        config.train.epochs = 3;
        config.stages.at(0).epochs = 3;
        config.stages.at(0).init = imported;
        config.stages.at(0).optim.lr = 3e-3;
        config.stages.at(0).optim.warmup_epochs = 0.2;
        Trainer trainer(config, dir.str(std::string(file) + "-run"), load_train_test(config));
        const auto history = trainer.fit();
        ASSERT_EQ(history.size(), 3u) << file;
        EXPECT_GT(history.back().test_acc, 0.25) << file;
        EXPECT_LT(history.back().train_loss, history.front().train_loss) << file;
    }
}

TEST(TorchPickle, StorageExtentBoundsEveryView) {
    format::PickledTensor t;
    t.offset = 3;
    t.shape = {2, 5};
    t.stride = {5, 1};
    EXPECT_EQ(format::storage_extent(t), 3 + 9 + 1);
    t.stride = {1, 2};  // a transposed view
    EXPECT_EQ(format::storage_extent(t), 3 + 1 + 8 + 1);
    t.shape = {0, 5};
    EXPECT_EQ(format::storage_extent(t), 0);
    t.shape = {2, 5};
    t.stride = {-1, 1};
    EXPECT_EQ(format::storage_extent(t), -1);
    t.stride = {int64_t{1} << 62, 1};
    EXPECT_EQ(format::storage_extent(t), -1);
}
