// timm's reference Swin (tests/data/timm-reference/swin_32_p2_w4_rgb.*, made by timm's own code as
// that folder's README records): its configuration and the input batch and logits stored beside it,
// shared by the training-side and the runtime-side Swin tests.
#pragma once

#include <torch/torch.h>

#include <string>

#include "format/safetensors.h"
#include "train/swin.h"

namespace bitvit::test_util {

inline const std::string kTimmReference = std::string(BITVIT_SOURCE_DIR) + "/tests/data/timm-reference/";

// SwinTransformer(img_size=32, patch_size=2, in_chans=3, num_classes=7, embed_dim=24, depths=(2, 2),
// num_heads=(2, 4), window_size=4): shifted windows in both stages.
inline SwinConfig reference_swin_config() {
    SwinConfig c;
    c.name = "swin_32_p2_w4_rgb";
    c.img_size = 32;
    c.patch_size = 2;
    c.in_chans = 3;
    c.num_classes = 7;
    c.embed_dim = 24;
    c.depths = {2, 2};
    c.num_heads = {2, 4};
    c.window_size = 4;
    return c;
}

// "input" [B, 3, 32, 32] (normalised) or "logits" [B, 7], as timm computed them.
inline torch::Tensor reference_swin_io(const std::string & name) {
    const auto file = format::SafetensorsFile::load(kTimmReference + "swin_32_p2_w4_rgb.io.safetensors");
    const auto & info = file.info(name);
    return torch::from_blob(const_cast<uint8_t *>(file.data(name)), info.shape, torch::kFloat).clone();
}

}  // namespace bitvit::test_util
