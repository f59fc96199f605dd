#include "distill.h"

#include <cmath>

#include "train/batched-matmul.h"

namespace bitvit {
namespace F = torch::nn::functional;
using torch::Tensor;

namespace {

void check_layers(const std::vector<BlockTaps> & s, const std::vector<BlockTaps> & t) {
    TORCH_CHECK(s.size() == t.size(), "feature distillation needs teacher and student of the same depth (",
                s.size(), " vs ", t.size(), " blocks)");
    TORCH_CHECK(!s.empty() && s[0].probs.defined() && t[0].probs.defined(),
                "feature distillation needs captured block tensors (set_capture on both models)");
}

Tensor gram(const Tensor & x) {  // [B, H, N, d] -> [B, H, N, N]
    return batched_matmul(x, x.transpose(-2, -1)) / std::sqrt(static_cast<double>(x.size(-1)));
}

Tensor direction_distance(const Tensor & s, const Tensor & t) {
    return (s / s.norm().clamp_min(1e-12) - t / t.norm().clamp_min(1e-12)).norm();
}

}  // namespace

Tensor logit_loss(const ModelOutput & student, const Tensor & labels, const Tensor & teacher_logits,
                  const DistillSection & distill, double label_smoothing) {
    const auto ce = F::CrossEntropyFuncOptions().label_smoothing(label_smoothing);
    const Tensor & cls = student.logits;
    const Tensor & dist = student.dist_logits.defined() ? student.dist_logits : student.logits;
    if (distill.kind == "none") {
        auto loss = F::cross_entropy(cls, labels, ce);
        if (student.dist_logits.defined()) loss = (loss + F::cross_entropy(student.dist_logits, labels, ce)) / 2;
        return loss;
    }
    TORCH_CHECK(teacher_logits.defined(), "distillation '", distill.kind, "' needs teacher logits");
    const double tau = distill.tau;
    if (distill.kind == "distribution") {
        const auto target = torch::softmax(teacher_logits / tau, 1);
        auto soft_ce = [&](const Tensor & z) { return -(target * torch::log_softmax(z / tau, 1)).sum(1).mean(); };
        return student.dist_logits.defined() ? (soft_ce(cls) + soft_ce(dist)) / 2 : soft_ce(cls);
    }
    const auto base = F::cross_entropy(cls, labels, ce);
    if (distill.kind == "hard") {
        return (1 - distill.alpha) * base + distill.alpha * F::cross_entropy(dist, teacher_logits.argmax(1));
    }
    TORCH_CHECK(distill.kind == "soft", "unknown distillation kind '", distill.kind, "'");
    const auto kl = F::kl_div(torch::log_softmax(dist / tau, 1), torch::log_softmax(teacher_logits / tau, 1),
                              F::KLDivFuncOptions().reduction(torch::kSum).log_target(true)) *
                    (tau * tau) / static_cast<double>(dist.numel());
    return (1 - distill.alpha) * base + distill.alpha * kl;
}

Tensor attention_mse_loss(const std::vector<BlockTaps> & s, const std::vector<BlockTaps> & t) {
    check_layers(s, t);
    Tensor loss = torch::zeros({}, s[0].scores.options());
    for (size_t l = 0; l < s.size(); ++l) loss = loss + F::mse_loss(s[l].scores, t[l].scores);
    return loss;
}

Tensor hidden_mse_loss(const std::vector<BlockTaps> & s, const std::vector<BlockTaps> & t) {
    check_layers(s, t);
    Tensor loss = torch::zeros({}, s[0].hidden.options());
    for (size_t l = 0; l < s.size(); ++l) loss = loss + F::mse_loss(s[l].hidden, t[l].hidden);
    return loss;
}

Tensor direction_matching_loss(const std::vector<BlockTaps> & s, const std::vector<BlockTaps> & t) {
    check_layers(s, t);
    Tensor loss = torch::zeros({}, s[0].q.options());
    for (size_t l = 0; l < s.size(); ++l) {
        loss = loss + direction_distance(gram(s[l].q), gram(t[l].q)) + direction_distance(gram(s[l].k), gram(t[l].k)) +
               direction_distance(gram(s[l].v), gram(t[l].v));
    }
    return loss;
}

Tensor ranking_loss(const std::vector<BlockTaps> & s, const std::vector<BlockTaps> & t, int64_t top_k, double tau) {
    check_layers(s, t);
    Tensor total = torch::zeros({}, s[0].scores.options());
    Tensor pairs = torch::zeros({}, s[0].scores.options());
    for (size_t l = 0; l < s.size(); ++l) {
        const int64_t k = std::min<int64_t>(top_k, t[l].probs.size(-1));
        auto [teacher_top, index] = t[l].probs.detach().topk(k, -1);  // [B, H, N, K], descending
        const Tensor student = s[l].scores.gather(-1, index);           // [B, H, N, K]
        // Pair (a, b), a before b in the teacher's order: the student's score a should exceed b's.
        const Tensor margin = student.unsqueeze(-1) - student.unsqueeze(-2);      // [B, H, N, K, K]
        const Tensor ordered = (teacher_top.unsqueeze(-1) > teacher_top.unsqueeze(-2)).to(margin.dtype());
        total = total + (F::softplus(-margin / tau) * ordered).sum();
        pairs = pairs + ordered.sum();
    }
    return total / pairs.clamp_min(1);
}

Tensor feature_loss(const std::vector<BlockTaps> & s, const std::vector<BlockTaps> & t, const DistillSection & d) {
    Tensor loss = torch::zeros({});
    if (d.attn_mse > 0) loss = loss + d.attn_mse * attention_mse_loss(s, t);
    if (d.hidden_mse > 0) loss = loss + d.hidden_mse * hidden_mse_loss(s, t);
    if (d.dmd > 0) loss = loss + d.dmd * direction_matching_loss(s, t);
    if (d.rank > 0) loss = loss + d.rank * ranking_loss(s, t, d.rank_top_k, d.rank_tau);
    return loss;
}

BatchLoss stage_loss(VisionModel & student, VisionModel * teacher, const Tensor & images, const Tensor & labels,
                     const DistillSection & distill, double label_smoothing) {
    Tensor teacher_logits;
    if (teacher) {
        torch::NoGradGuard no_grad;
        teacher_logits = (*teacher)->forward(images);
    }
    const ModelOutput out = student->forward_heads(images);
    Tensor loss = logit_loss(out, labels, teacher_logits, distill, label_smoothing);
    if (distill.uses_features()) loss = loss + feature_loss(student->taps(), (*teacher)->taps(), distill);
    return {loss, out.logits.argmax(1).eq(labels).sum().item<int64_t>()};
}

}  // namespace bitvit
