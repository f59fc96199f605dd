#include "spec/sites.h"

namespace bitvit::spec {

std::vector<SiteSpec> deit_sites(const DeitConfig & c) {
    std::vector<SiteSpec> sites;
    auto linear = [&](const std::string & name, int64_t in, int64_t out) {
        sites.push_back({name + ".weight", kWeightSite, out});
        sites.push_back({name + ".input", kTokenSite, in});
    };
    const int64_t D = c.embed_dim, H = c.num_heads;
    linear("patch_embed.proj", c.in_chans * c.patch_size * c.patch_size, D);
    for (int64_t i = 0; i < c.depth; ++i) {
        const std::string b = "blocks." + std::to_string(i) + ".";
        linear(b + "attn.qkv", D, 3 * D);
        for (const char * head_site : {"attn.q", "attn.k", "attn.v"}) sites.push_back({b + head_site, kHeadSite, H});
        sites.push_back({b + "attn.probs", kAttentionSite, H});
        linear(b + "attn.proj", D, D);
        linear(b + "mlp.fc1", D, c.hidden());
        linear(b + "mlp.fc2", c.hidden(), D);
    }
    linear("head", D, c.num_classes);
    if (c.distilled) linear("head_dist", D, c.num_classes);
    return sites;
}

}  // namespace bitvit::spec
