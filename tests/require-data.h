// Tests that train on Fashion-MNIST need the Debian package dataset-fashion-mnist. On a developer's
// machine without it they are skipped; under CI (CI=true) a missing data set is a failure, so a
// broken install can never turn the suite green by skipping.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "data/image-dataset.h"

#define BITVIT_REQUIRE_FASHION_MNIST()                                                                         \
    do {                                                                                                       \
        if (!std::filesystem::exists(bitvit::data::default_root("fashion-mnist"))) {                           \
            const char * ci = std::getenv("CI");                                                               \
            if (ci && std::strcmp(ci, "true") == 0) FAIL() << "CI=true and dataset-fashion-mnist is not installed"; \
            GTEST_SKIP() << "dataset-fashion-mnist is not installed";                                          \
        }                                                                                                      \
    } while (0)
