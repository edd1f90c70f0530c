// Counts every heap allocation of the test process. alloc_counter.cpp
// interposes glibc's malloc family, which operator new and everything else
// end in; link it into one binary only (two definitions of malloc cannot
// share a program).
#pragma once

namespace bnorm::test {

/// Heap allocations made so far by the process (all threads).
long heap_allocations() noexcept;

}  // namespace bnorm::test
