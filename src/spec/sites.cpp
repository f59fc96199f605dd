#include "spec/sites.h"

namespace bitvit::spec {

namespace {

void add_linear(std::vector<SiteSpec> & sites, const std::string & name, int64_t in, int64_t out) {
    sites.push_back({name + ".weight", kWeightSite, out});
    sites.push_back({name + ".input", kTokenSite, in});
}

// The sites of one transformer block of width D, H heads and an MLP of `hidden` units.
void add_block(std::vector<SiteSpec> & sites, const std::string & b, int64_t D, int64_t H, int64_t hidden) {
    add_linear(sites, b + "attn.qkv", D, 3 * D);
    for (const char * head_site : {"attn.q", "attn.k", "attn.v"}) sites.push_back({b + head_site, kHeadSite, H});
    sites.push_back({b + "attn.probs", kAttentionSite, H});
    add_linear(sites, b + "attn.proj", D, D);
    add_linear(sites, b + "mlp.fc1", D, hidden);
    add_linear(sites, b + "mlp.fc2", hidden, D);
}

}  // namespace

std::vector<SiteSpec> deit_sites(const DeitConfig & c) {
    std::vector<SiteSpec> sites;
    const int64_t D = c.embed_dim;
    add_linear(sites, "patch_embed.proj", c.in_chans * c.patch_size * c.patch_size, D);
    for (int64_t i = 0; i < c.depth; ++i) add_block(sites, "blocks." + std::to_string(i) + ".", D, c.num_heads, c.hidden());
    add_linear(sites, "head", D, c.num_classes);
    if (c.distilled) add_linear(sites, "head_dist", D, c.num_classes);
    return sites;
}

std::vector<SiteSpec> swin_sites(const SwinConfig & c) {
    std::vector<SiteSpec> sites;
    add_linear(sites, "patch_embed.proj", c.in_chans * c.patch_size * c.patch_size, c.embed_dim);
    for (int64_t i = 0; i < c.num_stages(); ++i) {
        const std::string layer = "layers." + std::to_string(i) + ".";
        const int64_t D = c.stage_dim(i);
        if (i > 0) add_linear(sites, layer + "downsample.reduction", 2 * D, D);  // 4 · (D/2) merged channels
        for (int64_t j = 0; j < c.depths[i]; ++j) {
            add_block(sites, layer + "blocks." + std::to_string(j) + ".", D, c.num_heads[i], c.stage_hidden(i));
        }
    }
    add_linear(sites, "head.fc", c.stage_dim(c.num_stages() - 1), c.num_classes);
    return sites;
}

}  // namespace bitvit::spec
