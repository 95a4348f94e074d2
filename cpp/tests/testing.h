// testing.h -- a tiny test harness for the C++ core, so that cpp/ builds and
// tests without Python or a test framework.
//
// TEST(name) { ... } registers a test; CHECK(cond) and CHECK_EQ(a, b) report a
// failure with file and line and end the current test (they return), so the
// remaining tests still run. In a forked child, use CHILD_CHECK, which exits
// the child with status 1 instead. RunAllTests() runs every test (or only
// those whose name contains argv[1]) and returns the process exit status.
#ifndef RAYX_TESTS_TESTING_H_
#define RAYX_TESTS_TESTING_H_

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace testing {

struct TestCase {
  const char* name;
  void (*body)();
};

inline std::vector<TestCase>& Registry() {
  static std::vector<TestCase> tests;
  return tests;
}

inline bool& CurrentTestFailed() {
  static bool failed = false;
  return failed;
}

struct Registrar {
  Registrar(const char* name, void (*body)()) { Registry().push_back({name, body}); }
};

inline void ReportFailure(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "  FAILED %s:%d: %s\n", file, line, what.c_str());
  CurrentTestFailed() = true;
}

inline int RunAllTests(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : nullptr;
  int failures = 0, run = 0;
  for (const TestCase& test : Registry()) {
    if (filter != nullptr && std::strstr(test.name, filter) == nullptr) continue;
    CurrentTestFailed() = false;
    std::fprintf(stderr, "[ RUN  ] %s\n", test.name);
    test.body();
    run++;
    if (CurrentTestFailed()) failures++;
    std::fprintf(stderr, "[ %s ] %s\n", CurrentTestFailed() ? "FAIL" : " OK ", test.name);
  }
  std::fprintf(stderr, "%d tests, %d failed\n", run, failures);
  return failures == 0 && run > 0 ? 0 : 1;
}

}  // namespace testing

#define TEST(name)                                               \
  static void name();                                            \
  static testing::Registrar name##_registrar(#name, name);       \
  static void name()

#define CHECK(cond)                                                      \
  do {                                                                   \
    if (!(cond)) {                                                       \
      testing::ReportFailure(__FILE__, __LINE__, "CHECK(" #cond ")");    \
      return;                                                            \
    }                                                                    \
  } while (0)

#define CHECK_EQ(a, b)                                                           \
  do {                                                                           \
    auto check_a_ = (a);                                                         \
    auto check_b_ = (b);                                                         \
    if (!(check_a_ == check_b_)) {                                               \
      std::ostringstream check_why_;                                             \
      check_why_ << #a " == " #b " (" << check_a_ << " vs " << check_b_ << ")";  \
      testing::ReportFailure(__FILE__, __LINE__, check_why_.str());              \
      return;                                                                    \
    }                                                                            \
  } while (0)

#define CHILD_CHECK(cond)                                                        \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "  child %d FAILED %s:%d: %s\n", getpid(), __FILE__,  \
                   __LINE__, #cond);                                             \
      _exit(1);                                                                  \
    }                                                                            \
  } while (0)

#endif  // RAYX_TESTS_TESTING_H_
