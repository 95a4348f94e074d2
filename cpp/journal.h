// journal.h -- an undo journal that makes each locked section of the arena
// all-or-nothing, so that a process killed while holding the lock leaves no
// half-done change behind.
//
// HOW IT WORKS
//
// Every byte of arena metadata (block headers, free lists, the object table,
// LRU links, counters) is changed only while holding the arena's robust mutex,
// and only through Journal::Write. Write first appends an undo record to a log
// that lives in the shared segment -- the offset, the length and the bytes
// about to be overwritten -- then publishes the new log length, and only then
// overwrites the metadata. When the locked section is done, Commit() empties
// the log (one store) before the mutex is unlocked.
//
// If the process dies in between, the next process to lock the mutex gets
// EOWNERDEAD. It calls Rollback(), which copies the saved bytes back, newest
// record first, so the metadata is exactly what it was before the dead process
// took the lock; then it marks the mutex consistent and carries on. Rolling
// back is idempotent (restoring saved values newest-first always ends at the
// oldest values), so a recoverer that itself dies half-way through a rollback
// is recovered by the next one. Stores of a killed process are not lost (the
// memory is shared, not the process's), so only compiler and CPU reordering
// matter, and release fences order "record saved" before "metadata changed".
//
// A locked section must be bounded: it may make at most kJournalCapacity
// writes. Long loops (release of a dead process's pins) commit after each
// element, each element leaving the metadata consistent on its own.
//
// The payload bytes of objects are not journaled: they are never written
// under the lock, and a rolled-back allocation simply returns its block.
#ifndef RAYX_JOURNAL_H_
#define RAYX_JOURNAL_H_

#include <cstddef>
#include <cstdint>

namespace rayx {

constexpr uint32_t kJournalCapacity = 512;     // undo records per locked section
constexpr uint32_t kJournalMaxWriteBytes = 64; // one record saves up to this many bytes

struct JournalRecord {          // one saved range of metadata
  uint64_t offset;              // where, from the segment base
  uint32_t length;              // how many bytes (<= kJournalMaxWriteBytes)
  uint32_t reserved;
  uint8_t saved[kJournalMaxWriteBytes];  // the bytes before the write
};

struct JournalLog {             // lives in the shared segment
  uint32_t length;              // records in use; 0 = nothing to undo
  uint32_t reserved;
  uint64_t rollbacks;           // how many times a recoverer rolled back
  JournalRecord records[kJournalCapacity];
};

// A process's handle on the shared log. Not thread-safe by itself: the arena
// calls it only while holding its mutex.
class Journal {
 public:
  Journal(uint8_t* segment_base, JournalLog* log) : base_(segment_base), log_(log) {}

  // Saves the `length` bytes at `destination` in the log, then copies `source`
  // over them. `destination` must lie inside the segment and `length` must be
  // at most kJournalMaxWriteBytes; more than kJournalCapacity writes in one
  // section is a programming error and aborts with a message.
  void Write(void* destination, const void* source, size_t length);

  template <typename T>
  void Set(T& field, const T& value) { Write(&field, &value, sizeof(T)); }

  // Forgets the records: the changes made so far become permanent.
  void Commit();

  // Undoes every recorded write, newest first, then empties the log.
  // Returns the number of records undone.
  uint32_t Rollback();

  uint32_t pending() const { return log_->length; }

  // Test hook: the `n`-th Write from now kills this process with SIGKILL just
  // after it changed the metadata (0 switches the hook off). Lets the tests
  // stop a process at every step of an operation.
  void CrashAfterWrites(uint32_t n) { crash_countdown_ = n; }

 private:
  uint8_t* base_;
  JournalLog* log_;
  uint32_t crash_countdown_ = 0;
};

}  // namespace rayx

#endif  // RAYX_JOURNAL_H_
