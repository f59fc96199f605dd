#include "verify.h"

#include <algorithm>
#include <cmath>

namespace bitvit {

VerifyReport verify_packed(Deit & model, const runtime::PackedModel & packed, const data::ImageDataset & data,
                           const Preprocess & pre, int64_t batch_size, int threads) {
    torch::NoGradGuard no_grad;
    model->eval();
    const std::vector<std::vector<float>> runtime_logits = packed.predict(data.pixels.data(), data.size(), threads);
    std::vector<int64_t> order(static_cast<size_t>(data.size()));
    for (int64_t i = 0; i < data.size(); ++i) order[i] = i;
    BatchLoader loader(data, std::move(order), batch_size, false, pre, false, 0, 2);
    VerifyReport r;
    int64_t torch_correct = 0, runtime_correct = 0;
    while (auto batch = loader.next()) {
        const torch::Tensor logits = model->forward(batch->images).contiguous();
        const int64_t classes = logits.size(1);
        const float * t = logits.data_ptr<float>();
        for (int64_t j = 0; j < logits.size(0); ++j, ++r.count) {
            const std::vector<float> & rt = runtime_logits[static_cast<size_t>(r.count)];
            const auto t_top = std::max_element(t + j * classes, t + (j + 1) * classes) - (t + j * classes);
            const auto r_top = std::max_element(rt.begin(), rt.end()) - rt.begin();
            const int64_t label = data.labels[static_cast<size_t>(r.count)];
            r.agree += t_top == r_top;
            torch_correct += t_top == label;
            runtime_correct += r_top == label;
            for (int64_t c = 0; c < classes; ++c) {
                r.max_abs_logit_diff = std::max(r.max_abs_logit_diff, static_cast<double>(std::fabs(t[j * classes + c] - rt[c])));
            }
        }
    }
    r.torch_accuracy = r.count ? static_cast<double>(torch_correct) / r.count : 0.0;
    r.runtime_accuracy = r.count ? static_cast<double>(runtime_correct) / r.count : 0.0;
    return r;
}

}  // namespace bitvit
