#include <gtest/gtest.h>

#include <cstdlib>

#include "runtime/cpu-features.h"

using namespace bitvit::runtime;

TEST(CpuFeatures, TiersAreNested) {
    const auto & f = cpu_features();
    if (f.avx512vpopcntdq) EXPECT_TRUE(f.avx512bw);
    if (f.avx512bw) EXPECT_TRUE(f.avx2);
    const auto isas = supported_isas();
    ASSERT_FALSE(isas.empty());
    EXPECT_EQ(isas.front(), Isa::scalar);
    EXPECT_EQ(isas.back(), best_supported_isa());
}

TEST(CpuFeatures, EnvironmentCapsTheTier) {
    ::setenv("BITVIT_ISA", "scalar", 1);
    EXPECT_EQ(selected_isa(), Isa::scalar);
    ::setenv("BITVIT_ISA", "sse9", 1);
    EXPECT_THROW(selected_isa(), std::invalid_argument);
    ::unsetenv("BITVIT_ISA");
    EXPECT_EQ(selected_isa(), best_supported_isa());
}

TEST(CpuFeatures, NamesRoundTrip) {
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512bw, Isa::avx512vpopcntdq}) EXPECT_EQ(parse_isa(isa_name(isa)), isa);
}
