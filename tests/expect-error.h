// expect_error<E>(fn, fragments): `fn` must throw an E whose message holds every fragment (each
// missing one is reported with the whole message), so a test checks that an error names what was
// wrong and where, not only that something was thrown.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

namespace bitvit::test_util {

template <class E, class Fn>
void expect_error(Fn fn, std::initializer_list<std::string> fragments) {
    try {
        fn();
        ADD_FAILURE() << "expected an exception naming: " << (fragments.size() ? *fragments.begin() : std::string());
    } catch (const E & e) {
        const std::string message = e.what();
        for (const auto & f : fragments) EXPECT_NE(message.find(f), std::string::npos) << "message: " << message << "\nmissing: " << f;
    }
}

}  // namespace bitvit::test_util
