// arena.h -- the node's shared-memory object store: one file in /dev/shm that
// every process of the node maps, holding the objects' bytes and all the
// metadata needed to create, seal, pin, release and delete them without
// talking to any other process.
//
// LAYOUT OF THE SEGMENT (all references are offsets from the segment start,
// since every process maps it at its own address)
//
//   SegmentHeader   magic, version, geometry, the robust mutex, counters, the
//                   LRU list ends, the allocator's HeapState, the process
//                   table, and the journal (undo log, see journal.h)
//   object table    ObjectEntry[num_entries] + bucket heads uint32[num_buckets]:
//                   a chained hash table keyed by the 20-byte object id; free
//                   entries form a pool linked through the same `chain_next`
//   pin records     PinRecord[num_pin_records]: who pins what, one record per
//                   (object, process slot) with a count; free ones form a pool
//   heap            the blocks of the allocator (see allocator.h), page aligned
//
// Entries never move, so an entry's index is a stable handle: blocks name
// their owner entry, LRU links and pin lists are entry / record indices.
//
// PROCESSES AND PINS. Each attached Arena takes a slot of the process table
// (its pid). get() pins an object for the calling slot and release() unpins
// it; because pins are recorded per (object, slot), release_pins_of(pid) can
// drop every pin a dead process held and abort the objects it was still
// writing. A forked child that uses an Arena inherited from its parent takes a
// slot of its own on first use (a pthread_atfork handler bumps a counter).
//
// LIFECYCLE OF AN OBJECT. create() -> CREATED (writable by its creator, not
// visible to get) -> seal() -> SEALED (immutable; get() pins it). abort()
// frees a CREATED object. delete() frees a SEALED object at once when no one
// pins it; otherwise it marks it "delete pending" -- get()/contains() stop
// seeing it -- and the last release() frees it. Sealed objects with no pins
// sit in an LRU list (least recently used at the head): they enter it when
// sealed or when their last pin goes, and leave it when pinned or deleted;
// lru_candidates() walks it to propose eviction victims.
//
// ROBUSTNESS. All metadata changes happen under one process-shared robust
// mutex and through the journal, so each locked section is all-or-nothing: a
// process killed inside one (even SIGKILL) is rolled back by the next locker,
// which gets EOWNERDEAD from the mutex. Accounting therefore balances after any
// crash; the dead process's pins stay until release_pins_of(pid).
//
// THREADS. One Arena object may be used by several threads of a process (the
// mutex serialises them); the per-process fields are only touched under it.
//
// LOCK WAITS. Every operation but Prefault runs its work in one section under
// the mutex, which it first tries to take without waiting. Only when another
// thread or process holds it does the operation call the process's
// LockWaitHooks: begin_wait() before it blocks, and end_wait(token) when the
// operation is over, after the mutex is released -- so a locked section never
// waits for whatever begin_wait gave up. The Python wrapper (store.pyx) uses
// them to release the GIL for exactly the calls that have to wait.
#ifndef RAYX_ARENA_H_
#define RAYX_ARENA_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "allocator.h"
#include "journal.h"
#include "status.h"

namespace rayx {

constexpr int kObjectIdSize = 20;
constexpr uint32_t kMaxProcesses = 1024;       // process table slots
constexpr uint64_t kMinObjectEntries = 4096;
constexpr uint64_t kBytesPerObjectEntry = 4096;  // default table: one entry per 4 KiB

struct ObjectId {
  uint8_t bytes[kObjectIdSize];
};

struct ArenaOptions {
  uint64_t object_entries = 0;  // table size; 0 = max(kMinObjectEntries, capacity / 4 KiB)
  bool populate = false;        // MAP_POPULATE the creator's mapping (warms every page)
};

// Called around a wait for the arena mutex (see LOCK WAITS above); the token
// begin_wait returns is passed to end_wait. Either may be null (no call).
struct LockWaitHooks {
  void* (*begin_wait)() = nullptr;
  void (*end_wait)(void* token) = nullptr;
};

// Installs `hooks` for every Arena of the process. Call it before the arenas
// are used (it is not synchronised with operations running meanwhile).
void SetLockWaitHooks(const LockWaitHooks& hooks);

struct ArenaStats {
  uint64_t capacity;            // size of the segment (file)
  uint64_t heap_size;           // the part of it that holds blocks
  uint64_t bytes_allocated;     // allocated blocks, headers included
  uint64_t bytes_free;          // free blocks, headers included
  uint64_t largest_free_block;  // largest payload one create() can get now
  uint64_t allocated_blocks;
  uint64_t free_blocks;
  uint64_t object_bytes;        // sum of the objects' requested sizes
  uint64_t num_objects;         // CREATED + SEALED (including delete pending)
  uint64_t num_sealed;
  uint64_t num_pinned;          // objects with at least one pin
  uint64_t num_lru;             // sealed and unpinned objects
  uint64_t num_processes;       // attached process slots
  uint64_t object_entries;      // table capacity
  uint64_t allocations;         // counters: allocate()/free() calls, pins/releases
  uint64_t frees;
  uint64_t pins;
  uint64_t releases;
  uint64_t recoveries;          // times a locker found the previous owner dead
};

class Arena {
 public:
  // Creates the file `path` (which must not exist) of `capacity` bytes (rounded
  // up to a page), formats it and attaches to it; *out receives a new Arena
  // owned by the caller. Fails: kInvalidArgument (capacity too small for the
  // metadata and one block), kSystemError (errno: EEXIST, ENOSPC, ...).
  static Status Create(const std::string& path, uint64_t capacity, const ArenaOptions& options,
                       Arena** out);

  // Maps an existing arena file and takes a process slot. Fails: kSystemError
  // (errno), kBadSegment (not an arena, other version, truncated),
  // kProcessTableFull.
  static Status Attach(const std::string& path, Arena** out);

  // Removes the file (the memory lives on while some process maps it).
  static Status Unlink(const std::string& path);

  // Detaches (see Detach) and unmaps. Every pointer into the segment becomes
  // invalid: the caller must know that no one uses the memory any more.
  ~Arena();

  // Gives this process's slot back: drops the pins it still holds and aborts
  // the objects it created but did not seal. Idempotent; the mapping stays.
  Status Detach();

  uint8_t* base() const { return base_; }
  uint64_t capacity() const { return capacity_; }
  const std::string& path() const { return path_; }

  // Allocates an unsealed object of `size` bytes; *offset receives its payload
  // offset (64-aligned) from base(). Fails: kObjectExists (also while an
  // object of that id awaits deletion), kOutOfMemory, kTableFull,
  // kProcessTableFull.
  Status CreateObject(const ObjectId& id, uint64_t size, uint64_t* offset);

  // Makes a CREATED object immutable and visible. Fails: kObjectNotFound,
  // kObjectAlreadySealed.
  Status Seal(const ObjectId& id);

  // Frees a CREATED object. Fails: kObjectNotFound, kObjectAlreadySealed.
  Status Abort(const ObjectId& id);

  // Pins a SEALED object for this process and returns where it is. Fails:
  // kObjectNotFound (absent or delete pending), kObjectNotSealed,
  // kPinTableFull, kProcessTableFull.
  Status Get(const ObjectId& id, uint64_t* offset, uint64_t* size);

  // Drops one of this process's pins; the last pin of a delete-pending object
  // frees it. Fails: kObjectNotFound, kNotPinned.
  Status Release(const ObjectId& id);

  // Frees a SEALED object, or marks it delete-pending while pinned
  // (*deferred = true). Fails: kObjectNotFound (absent or already pending),
  // kObjectNotSealed.
  Status Delete(const ObjectId& id, bool* deferred);

  // *present = the object is sealed and not delete-pending.
  Status Contains(const ObjectId& id, bool* present);

  // Unpinned sealed objects, least recently used first, until their sizes add
  // up to at least `nbytes` (or the list ends). Appends to *out.
  Status LruCandidates(uint64_t nbytes, std::vector<ObjectId>* out);

  // Drops every pin held by the process slots of `pid`, aborts the unsealed
  // objects they created, and frees the slots. Meant for processes that died;
  // never pass a live process's pid. Counts go to the out-parameters.
  Status ReleasePinsOf(pid_t pid, uint64_t* pins_released, uint64_t* objects_aborted);

  // Faults in the pages of [offset, offset + length) of the segment for
  // writing (MADV_POPULATE_WRITE, or touching each page on older kernels)
  // without changing a byte; length 0 means "to the end". No lock is taken.
  // Fails: kInvalidArgument (range outside the segment), kSystemError.
  Status Prefault(uint64_t offset, uint64_t length);

  Status Stats(ArenaStats* stats);

  // Checks every invariant of the allocator, the table, the LRU list, the pin
  // records and the counters. Fails: kCorrupted with the reason in *error.
  Status Validate(std::string* error);

  // Test hooks. DebugLockAndHang takes the mutex, writes one byte to
  // `notify_fd` (if >= 0) and sleeps forever; it never returns, so call it in
  // a process you then kill. DebugCrashAfterWrites makes the n-th journaled
  // write from now SIGKILL this process (see Journal::CrashAfterWrites).
  void DebugLockAndHang(int notify_fd);
  void DebugCrashAfterWrites(uint32_t n) { journal_.CrashAfterWrites(n); }

  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

 private:
  struct SegmentHeader;
  struct ObjectEntry;
  struct PinRecord;
  class LockedSection;

  Arena(const std::string& path, uint8_t* base, uint64_t capacity);

  // Takes the mutex (see LOCK WAITS); *waited is set if the hooks' begin_wait
  // ran, and *wait_token to what it returned.
  Status Lock(bool* waited, void** wait_token);
  void Unlock();
  Status EnsureProcessSlot();
  uint32_t Find(const ObjectId& id) const;
  void LruAppend(uint32_t entry);
  void LruRemove(uint32_t entry);
  Status FreeObject(uint32_t entry);
  Status Pin(uint32_t entry, uint32_t slot);
  void DropSlot(uint32_t slot, uint64_t* pins_released, uint64_t* objects_aborted);
  bool ValidateLocked(std::string* error);

  ObjectEntry* entry(uint32_t index) const;
  PinRecord* pin_record(uint32_t index) const;
  uint32_t* buckets() const;

  std::string path_;
  uint8_t* base_;
  uint64_t capacity_;
  SegmentHeader* header_;
  Journal journal_;
  int process_slot_ = -1;             // our slot in the process table, or -1
  uint64_t process_slot_fork_generation_ = 0;  // fork generation when it was taken
};

}  // namespace rayx

#endif  // RAYX_ARENA_H_
