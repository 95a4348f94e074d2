// journal.cc -- the undo journal of the arena's locked sections (see journal.h
// for how and why).
#include "journal.h"

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace rayx {

void Journal::Write(void* destination, const void* source, size_t length) {
  uint32_t index = log_->length;
  if (index >= kJournalCapacity || length > kJournalMaxWriteBytes) {
    std::fprintf(stderr, "rayx arena: journal overflow (%u records, write of %zu bytes)\n",
                 index, length);
    std::abort();
  }
  JournalRecord& record = log_->records[index];
  record.offset = static_cast<uint64_t>(static_cast<uint8_t*>(destination) - base_);
  record.length = static_cast<uint32_t>(length);
  std::memcpy(record.saved, destination, length);
  // The record must be complete before it counts, and counted before the
  // metadata changes.
  std::atomic_thread_fence(std::memory_order_release);
  __atomic_store_n(&log_->length, index + 1, __ATOMIC_RELEASE);
  std::memcpy(destination, source, length);
  if (crash_countdown_ != 0 && --crash_countdown_ == 0) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    raise(SIGKILL);
  }
}

void Journal::Commit() {
  std::atomic_thread_fence(std::memory_order_release);
  __atomic_store_n(&log_->length, 0u, __ATOMIC_RELEASE);
}

uint32_t Journal::Rollback() {
  uint32_t count = __atomic_load_n(&log_->length, __ATOMIC_ACQUIRE);
  if (count > kJournalCapacity) count = kJournalCapacity;  // never trust a torn length
  for (uint32_t i = count; i-- > 0;) {
    const JournalRecord& record = log_->records[i];
    if (record.length <= kJournalMaxWriteBytes) {
      std::memcpy(base_ + record.offset, record.saved, record.length);
    }
  }
  std::atomic_thread_fence(std::memory_order_release);
  __atomic_store_n(&log_->length, 0u, __ATOMIC_RELEASE);
  if (count > 0) log_->rollbacks++;
  return count;
}

}  // namespace rayx
