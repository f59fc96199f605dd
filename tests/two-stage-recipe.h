// The staged quantized recipe that the stage, resume and multi-rank tests train: the nano DeiT,
// attention binarized first (PWS weights, sign inputs and k/v, a learned elastic scale on q that
// initialises on the first batch, SAB probabilities except block 0's), then the MLP's first layer
// at 4 bits per channel. Its [[stage]] tables come last, so a test may append a [stage.distill]
// or [stage.optim] table to the MLP stage.
#pragma once

#include <string>

namespace bitvit::test_util {

// `train_settings`: more lines of the [train] table, then any further tables ([data], ...).
inline std::string two_stage_recipe(const std::string & train_settings = "") {
    return R"([model]
name = "deit_nano_patch7_28"
[train]
batch_size = 64
threads = 1
)" + train_settings + R"(
[[stage]]
name = "attention"
epochs = 2
init = "scratch"
[stage.optim]
lr = 2e-3
warmup_epochs = 0
[stage.quantizers]
"attn.qkv.weight" = "pws"
"attn.qkv.input" = "sign"
"attn.q" = { name = "elastic_signed" }
"attn.k" = "sign"
"attn.v" = "sign"
"attn.probs" = { name = "sab", beta = 0.3 }
"blocks.0.attn.probs" = "fp"
[[stage]]
name = "mlp"
epochs = 1
[stage.quantizers]
"attn.qkv.weight" = "pws"
"mlp.fc1.weight" = { name = "lsq", bits = 4, per_channel = true }
)";
}

}  // namespace bitvit::test_util
