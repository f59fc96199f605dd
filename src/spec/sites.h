// Every quantization site of an architecture: its full name, its class (spec/quantizers.h) and its
// channel count. Training builds these sites into its modules (src/train/deit.h; a test checks the
// two lists agree), the runtime validates a packed file's "sites" against this list, and `bitvit
// ops` walks it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "spec/architecture.h"
#include "spec/quantizers.h"

namespace bitvit::spec {

struct SiteSpec {
    std::string name;     // "blocks.3.attn.qkv.weight"
    SiteClass site_class;
    int64_t channels;     // output rows of a weight, C of a linear input, H of a per-head tensor
};

// In order: patch_embed.proj.{weight,input}, then per block attn.qkv.{weight,input}, attn.q, attn.k,
// attn.v, attn.probs, attn.proj.{weight,input}, mlp.fc1.{weight,input}, mlp.fc2.{weight,input}, then
// head.{weight,input} (and head_dist.* when distilled).
std::vector<SiteSpec> deit_sites(const DeitConfig & config);

// In order: patch_embed.proj.{weight,input}, then per stage i its patch merging
// (layers.{i}.downsample.reduction.{weight,input}, i ≥ 1) and per block j the DeiT block's sites
// under layers.{i}.blocks.{j}., then head.fc.{weight,input}.
std::vector<SiteSpec> swin_sites(const SwinConfig & config);

}  // namespace bitvit::spec
