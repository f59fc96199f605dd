// Distillation losses: on logits (ReActNet distribution loss, DeiT hard and soft) and on features
// (attention-score and hidden-state MSE, BiBERT direction matching, Bi-ViT-style ranking-aware
// attention distillation). Definitions and normalisations: docs/quantization.md.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "config.h"
#include "deit.h"

namespace bitvit {

// The training loss of one batch on logits, with the distillation the stage asks for:
//   none:         CE(z_cls, y) with label smoothing (both heads averaged for a distilled student);
//   distribution: Σ_c −softmax(z_T/τ)_c · log_softmax(z_S/τ)_c, batch mean, no label term (ReActNet,
//                 BiViT); z_S = z_cls (averaged with z_dist for a distilled student);
//   hard:         (1 − α)·CE(z_cls, y) + α·CE(z_dist, argmax z_T)  (DeiT; z_dist = z_cls if absent);
//   soft:         (1 − α)·CE(z_cls, y) + α·τ²·KL(softmax(z_T/τ) ‖ softmax(z_dist/τ)) summed over the
//                 batch and divided by numel(z_dist) (DeiT's normalisation: per element, not per sample).
torch::Tensor logit_loss(const ModelOutput & student, const torch::Tensor & labels, const torch::Tensor & teacher_logits,
                         const DistillSection & distill, double label_smoothing);

// Σ over layers of mean squared error between the student's and the teacher's tensors.
torch::Tensor attention_mse_loss(const std::vector<BlockTaps> & student, const std::vector<BlockTaps> & teacher);
torch::Tensor hidden_mse_loss(const std::vector<BlockTaps> & student, const std::vector<BlockTaps> & teacher);

// BiBERT direction matching: for x in q, k, v of each layer, G = x·xᵀ/√d ([B, H, N, N]) and the loss
// ‖G_S/‖G_S‖ − G_T/‖G_T‖‖ with Frobenius norms over the whole batch tensor; summed over layers and x.
torch::Tensor direction_matching_loss(const std::vector<BlockTaps> & student, const std::vector<BlockTaps> & teacher);

// Ranking-aware attention distillation (our definition of Bi-ViT's; its code does not ship one): for
// every layer, head and query row, take the teacher's top-K keys by attention probability; for each
// ordered pair (j, k) of them with P_T[j] > P_T[k], penalise log(1 + exp(−(S_S[j] − S_S[k])/τ)) on the
// student's attention scores S_S (after its q/k quantizers, before softmax); mean over all such pairs.
torch::Tensor ranking_loss(const std::vector<BlockTaps> & student, const std::vector<BlockTaps> & teacher,
                           int64_t top_k, double tau);

// The weighted sum of the feature losses a stage enables (0 when none).
torch::Tensor feature_loss(const std::vector<BlockTaps> & student, const std::vector<BlockTaps> & teacher,
                           const DistillSection & distill);

// One batch's training loss for a stage: the student's (and the frozen teacher's, when the stage
// distils; nullptr otherwise) forward pass, logit_loss, plus feature_loss when the stage distils
// features (both models must have capture on). `correct`: the student's correct top-1 predictions.
struct BatchLoss {
    torch::Tensor loss;
    int64_t correct = 0;
};
BatchLoss stage_loss(VisionModel & student, VisionModel * teacher, const torch::Tensor & images, const torch::Tensor & labels,
                     const DistillSection & distill, double label_smoothing);

}  // namespace bitvit
