// arena.cc -- the node's shared-memory object store (layout, lifecycle and
// robustness are described in arena.h; the undo journal in journal.h; the
// block allocator in allocator.h).
//
// Conventions of this file:
//  * Index 0 of the object table and of the pin records is never used, so 0
//    means "none" in every link, and a freshly ftruncate'd (all-zero) file is
//    already an empty table: creating an arena touches only its header.
//    Entries and records never used yet lie above a high-water mark; freed
//    ones go to a pool list.
//  * Every store to shared metadata inside a locked section goes through
//    journal_ (Set/Write). A LockedSection rolls back whatever was not
//    committed when it ends, so an error path half-way through an operation
//    needs no clean-up code of its own.
//  * Under RAYX_DEBUG every committed section is followed by a full Validate.
#include "arena.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>

#include "robust_mutex.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace rayx {

namespace {

constexpr uint64_t kSegmentMagic = 0x414E455241585952ull;  // "RYXARENA"
constexpr uint32_t kSegmentVersion = 1;
constexpr uint32_t kNone = 0;

enum EntryState : uint8_t { kEntryFree = 0, kEntryCreated = 1, kEntrySealed = 2 };

// Bumped in every forked child, so an Arena inherited across fork() notices
// that it needs a process slot of its own.
std::atomic<uint64_t> fork_generation{0};

void OnForkInChild() { fork_generation.fetch_add(1, std::memory_order_relaxed); }

void RegisterForkHandlerOnce() {
  static std::once_flag registered;
  std::call_once(registered, [] { pthread_atfork(nullptr, nullptr, OnForkInChild); });
}

// The process's LockWaitHooks (SetLockWaitHooks).
std::atomic<void* (*)()> begin_lock_wait{nullptr};
std::atomic<void (*)(void*)> end_lock_wait{nullptr};

void* BeginLockWait() {
  void* (*hook)() = begin_lock_wait.load(std::memory_order_acquire);
  return hook != nullptr ? hook() : nullptr;
}

void EndLockWait(void* token) {
  void (*hook)(void*) = end_lock_wait.load(std::memory_order_acquire);
  if (hook != nullptr) hook(token);
}

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

uint64_t HashId(const ObjectId& id) {
  uint64_t first, second;
  uint32_t last;
  std::memcpy(&first, id.bytes, 8);
  std::memcpy(&second, id.bytes + 8, 8);
  std::memcpy(&last, id.bytes + 16, 4);
  return Mix(first ^ Mix(second ^ Mix(last + 0x9e3779b97f4a7c15ull)));
}

bool SameId(const ObjectId& a, const ObjectId& b) {
  return std::memcmp(a.bytes, b.bytes, kObjectIdSize) == 0;
}

uint64_t RoundUp(uint64_t value, uint64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

uint64_t PageSize() { return static_cast<uint64_t>(sysconf(_SC_PAGESIZE)); }

struct ProcessSlot {            // one attached Arena
  int32_t pid;
  uint32_t in_use;
};

}  // namespace

struct Arena::ObjectEntry {     // 64 bytes; index 0 unused
  ObjectId id;
  uint8_t state;                // EntryState
  uint8_t delete_pending;       // free when the last pin goes
  uint16_t creator_slot;        // process slot that created it
  uint32_t chain_next;          // next in the hash bucket, or in the free pool
  uint32_t lru_prev;            // LRU neighbours (towards head = older)
  uint32_t lru_next;
  uint32_t pin_head;            // first PinRecord of this object
  uint32_t pin_count;           // total pins, all processes
  uint32_t reserved;
  uint64_t offset;              // payload offset from the segment base
  uint64_t size;                // payload size asked for
};

struct Arena::PinRecord {       // pins of one process slot on one object
  uint32_t next;                // next record of the same object, or in the pool
  uint32_t count;
  uint32_t process_slot;
  uint32_t reserved;
};

struct Arena::SegmentHeader {
  uint64_t magic;               // kSegmentMagic, written last when formatting
  uint32_t version;             // kSegmentVersion
  uint32_t header_size;         // sizeof(SegmentHeader)
  uint64_t capacity;            // file size
  uint64_t entries_offset;      // ObjectEntry[num_entries + 1]
  uint64_t buckets_offset;      // uint32_t[num_buckets] (entry index, 0 = empty)
  uint64_t pins_offset;         // PinRecord[num_pin_records + 1]
  uint32_t num_entries;
  uint32_t num_buckets;         // power of two
  uint32_t num_pin_records;
  uint32_t reserved;

  alignas(64) pthread_mutex_t mutex;

  // Everything below changes only under the mutex, through the journal.
  alignas(64) uint32_t entry_free_head;  // pool of freed entries
  uint32_t entry_high_water;    // entries >= this were never used
  uint32_t pin_free_head;
  uint32_t pin_high_water;
  uint32_t lru_head;            // least recently used
  uint32_t lru_tail;            // most recently used
  uint32_t num_objects;
  uint32_t num_sealed;
  uint32_t num_pinned;
  uint32_t num_lru;
  uint32_t num_processes;
  uint32_t reserved2;
  uint64_t object_bytes;
  uint64_t pins;                // counters: pins taken and released
  uint64_t releases;
  uint64_t recoveries;          // EOWNERDEAD seen by lockers
  HeapState heap;
  ProcessSlot processes[kMaxProcesses];

  alignas(64) JournalLog journal;
};

// Holds the mutex for one operation. Whatever the operation wrote but did not
// Commit() is rolled back when the section ends.
// If taking it had to wait, the hooks' end_wait runs once the mutex is released.
class Arena::LockedSection {
 public:
  explicit LockedSection(Arena* arena)
      : arena_(arena), status_(arena->Lock(&waited_, &wait_token_)) {}
  ~LockedSection() {
    if (status_ == kOk) {
      if (arena_->journal_.pending() != 0) arena_->journal_.Rollback();
      arena_->Unlock();
    }
    if (waited_) EndLockWait(wait_token_);
  }
  Status status() const { return status_; }
  void Commit() {
    arena_->journal_.Commit();
#ifdef RAYX_DEBUG
    std::string error;
    if (!arena_->ValidateLocked(&error)) {
      std::fprintf(stderr, "rayx arena: invariant broken: %s\n", error.c_str());
      std::abort();
    }
#endif
  }

 private:
  Arena* arena_;
  bool waited_ = false;
  void* wait_token_ = nullptr;
  Status status_;
};

Arena::ObjectEntry* Arena::entry(uint32_t index) const {
  return reinterpret_cast<ObjectEntry*>(base_ + header_->entries_offset) + index;
}

Arena::PinRecord* Arena::pin_record(uint32_t index) const {
  return reinterpret_cast<PinRecord*>(base_ + header_->pins_offset) + index;
}

uint32_t* Arena::buckets() const {
  return reinterpret_cast<uint32_t*>(base_ + header_->buckets_offset);
}

Arena::Arena(const std::string& path, uint8_t* base, uint64_t capacity)
    : path_(path),
      base_(base),
      capacity_(capacity),
      header_(reinterpret_cast<SegmentHeader*>(base)),
      journal_(base, &reinterpret_cast<SegmentHeader*>(base)->journal) {
  static_assert(sizeof(ObjectEntry) == 64, "object entries are 64 bytes");
  static_assert(sizeof(PinRecord) == 16, "pin records are 16 bytes");
  RegisterForkHandlerOnce();
}

// ---------------------------------------------------------------------------
// Creating, attaching, detaching.

Status Arena::Create(const std::string& path, uint64_t capacity, const ArenaOptions& options,
                     Arena** out) {
  uint64_t page = PageSize();
  capacity = RoundUp(capacity, page);
  uint64_t num_entries = options.object_entries;
  if (num_entries == 0) {
    num_entries = capacity / kBytesPerObjectEntry;
    if (num_entries < kMinObjectEntries) num_entries = kMinObjectEntries;
  }
  if (num_entries >= (uint64_t{1} << 31)) return kInvalidArgument;
  uint64_t num_buckets = 1;
  while (num_buckets < num_entries) num_buckets <<= 1;
  uint64_t num_pin_records = num_entries;

  uint64_t offset = RoundUp(sizeof(SegmentHeader), kAlignment);
  uint64_t entries_offset = offset;
  offset += (num_entries + 1) * sizeof(ObjectEntry);
  uint64_t buckets_offset = offset;
  offset = RoundUp(offset + num_buckets * sizeof(uint32_t), kAlignment);
  uint64_t pins_offset = offset;
  offset += (num_pin_records + 1) * sizeof(PinRecord);
  uint64_t heap_begin = RoundUp(offset, page);
  if (heap_begin + kMinBlockSize > capacity) return kInvalidArgument;

  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return kSystemError;
  if (ftruncate(fd, static_cast<off_t>(capacity)) != 0) {
    int saved = errno;
    close(fd);
    unlink(path.c_str());
    errno = saved;
    return kSystemError;
  }
  int flags = MAP_SHARED | (options.populate ? MAP_POPULATE : 0);
  void* mapped = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, flags, fd, 0);
  int saved = errno;
  close(fd);
  if (mapped == MAP_FAILED) {
    unlink(path.c_str());
    errno = saved;
    return kSystemError;
  }
  uint8_t* base = static_cast<uint8_t*>(mapped);
  SegmentHeader* header = reinterpret_cast<SegmentHeader*>(base);
  std::memset(header, 0, sizeof(*header));
  header->version = kSegmentVersion;
  header->header_size = sizeof(SegmentHeader);
  header->capacity = capacity;
  header->entries_offset = entries_offset;
  header->buckets_offset = buckets_offset;
  header->pins_offset = pins_offset;
  header->num_entries = static_cast<uint32_t>(num_entries);
  header->num_buckets = static_cast<uint32_t>(num_buckets);
  header->num_pin_records = static_cast<uint32_t>(num_pin_records);
  header->entry_high_water = 1;
  header->pin_high_water = 1;
  Status status = InitRobustMutex(&header->mutex);
  if (status == kOk) status = Allocator::Format(base, &header->heap, heap_begin, capacity);
  if (status != kOk) {
    saved = errno;
    munmap(base, capacity);
    unlink(path.c_str());
    errno = saved;
    return status;
  }
  __atomic_store_n(&header->magic, kSegmentMagic, __ATOMIC_RELEASE);

  Arena* arena = new Arena(path, base, capacity);
  {
    LockedSection section(arena);
    status = section.status();
    if (status == kOk) status = arena->EnsureProcessSlot();
  }
  if (status != kOk) {
    delete arena;
    unlink(path.c_str());
    return status;
  }
  *out = arena;
  return kOk;
}

Status Arena::Attach(const std::string& path, Arena** out) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return kSystemError;
  struct stat info;
  if (fstat(fd, &info) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return kSystemError;
  }
  uint64_t capacity = static_cast<uint64_t>(info.st_size);
  if (capacity < sizeof(SegmentHeader)) {
    close(fd);
    return kBadSegment;
  }
  void* mapped = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int saved = errno;
  close(fd);
  if (mapped == MAP_FAILED) {
    errno = saved;
    return kSystemError;
  }
  uint8_t* base = static_cast<uint8_t*>(mapped);
  const SegmentHeader* header = reinterpret_cast<const SegmentHeader*>(base);
  bool valid = __atomic_load_n(&header->magic, __ATOMIC_ACQUIRE) == kSegmentMagic &&
               header->version == kSegmentVersion &&
               header->header_size == sizeof(SegmentHeader) && header->capacity == capacity &&
               header->heap.begin >= header->pins_offset && header->heap.end == capacity &&
               header->num_buckets != 0 &&
               (header->num_buckets & (header->num_buckets - 1)) == 0;
  if (!valid) {
    munmap(base, capacity);
    return kBadSegment;
  }
  Arena* arena = new Arena(path, base, capacity);
  Status status;
  {
    LockedSection section(arena);
    status = section.status();
    if (status == kOk) status = arena->EnsureProcessSlot();
  }
  if (status != kOk) {
    delete arena;
    return status;
  }
  *out = arena;
  return kOk;
}

Status Arena::Unlink(const std::string& path) {
  return unlink(path.c_str()) == 0 ? kOk : kSystemError;
}

Arena::~Arena() {
  Detach();
  munmap(base_, capacity_);
}

Status Arena::Detach() {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  if (process_slot_ >= 0 &&
      process_slot_fork_generation_ == fork_generation.load(std::memory_order_relaxed)) {
    uint64_t pins = 0, aborted = 0;
    DropSlot(static_cast<uint32_t>(process_slot_), &pins, &aborted);
  }
  process_slot_ = -1;
  return kOk;
}

// ---------------------------------------------------------------------------
// Locking and process slots.

void SetLockWaitHooks(const LockWaitHooks& hooks) {
  begin_lock_wait.store(hooks.begin_wait, std::memory_order_release);
  end_lock_wait.store(hooks.end_wait, std::memory_order_release);
}

Status Arena::Lock(bool* waited, void** wait_token) {
  LockOutcome outcome;
  bool acquired = false;
  Status status = TryLockRobustMutex(&header_->mutex, &outcome, &acquired);
  if (status == kOk && !acquired) {
    *wait_token = BeginLockWait();
    *waited = true;
    status = LockRobustMutex(&header_->mutex, &outcome);
  }
  if (status != kOk) return status;
  if (outcome == LockOutcome::kAcquiredOwnerDied) {
    // The previous owner died inside a locked section: undo what it did.
    journal_.Rollback();
    header_->recoveries++;
    status = MarkConsistent(&header_->mutex);
    if (status != kOk) {
      UnlockRobustMutex(&header_->mutex);
      return status;
    }
  }
  return kOk;
}

void Arena::Unlock() { UnlockRobustMutex(&header_->mutex); }

// Takes a process slot if this process has none (first use after fork()).
// Commits on its own, so it must run before any other write of a section.
Status Arena::EnsureProcessSlot() {
  uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (process_slot_ >= 0 && process_slot_fork_generation_ == generation) return kOk;
  for (uint32_t slot = 0; slot < kMaxProcesses; slot++) {
    ProcessSlot& process = header_->processes[slot];
    if (process.in_use) continue;
    journal_.Set(process.pid, static_cast<int32_t>(getpid()));
    journal_.Set(process.in_use, uint32_t{1});
    journal_.Set(header_->num_processes, header_->num_processes + 1);
    journal_.Commit();
    process_slot_ = static_cast<int>(slot);
    process_slot_fork_generation_ = generation;
    return kOk;
  }
  return kProcessTableFull;
}

// Drops the pins of `slot`, aborts the unsealed objects it created and frees
// the slot. Commits after each object, so the section stays bounded.
void Arena::DropSlot(uint32_t slot, uint64_t* pins_released, uint64_t* objects_aborted) {
  for (uint32_t index = 1; index < header_->entry_high_water; index++) {
    ObjectEntry* object = entry(index);
    if (object->state == kEntryFree) continue;
    if (object->state == kEntryCreated) {
      if (object->creator_slot != slot) continue;
      if (FreeObject(index) == kOk) {
        (*objects_aborted)++;
        journal_.Commit();
      } else {
        journal_.Rollback();  // corrupted entry: leave it for validate() to report
      }
      continue;
    }
    uint32_t previous = kNone;
    uint32_t record = object->pin_head;
    while (record != kNone && pin_record(record)->process_slot != slot) {
      previous = record;
      record = pin_record(record)->next;
    }
    if (record == kNone) continue;
    PinRecord* pins = pin_record(record);
    uint32_t count = pins->count;
    if (previous == kNone) {
      journal_.Set(object->pin_head, pins->next);
    } else {
      journal_.Set(pin_record(previous)->next, pins->next);
    }
    journal_.Set(pins->next, header_->pin_free_head);
    journal_.Set(pins->count, uint32_t{0});
    journal_.Set(header_->pin_free_head, record);
    journal_.Set(object->pin_count, object->pin_count - count);
    journal_.Set(header_->releases, header_->releases + count);
    *pins_released += count;
    if (object->pin_count == 0) {
      journal_.Set(header_->num_pinned, header_->num_pinned - 1);
      if (!object->delete_pending) {
        LruAppend(index);
      } else if (FreeObject(index) != kOk) {
        journal_.Rollback();  // corrupted entry: leave it for validate() to report
        continue;
      }
    }
    journal_.Commit();
  }
  ProcessSlot& process = header_->processes[slot];
  if (process.in_use) {
    journal_.Set(process.in_use, uint32_t{0});
    journal_.Set(process.pid, int32_t{0});
    journal_.Set(header_->num_processes, header_->num_processes - 1);
  }
  journal_.Commit();
}

// ---------------------------------------------------------------------------
// Table, LRU and pin helpers (all under the lock).

uint32_t Arena::Find(const ObjectId& id) const {
  uint32_t bucket = static_cast<uint32_t>(HashId(id) & (header_->num_buckets - 1));
  for (uint32_t index = buckets()[bucket]; index != kNone; index = entry(index)->chain_next) {
    if (SameId(entry(index)->id, id)) return index;
  }
  return kNone;
}

void Arena::LruAppend(uint32_t index) {
  ObjectEntry* object = entry(index);
  uint32_t tail = header_->lru_tail;
  journal_.Set(object->lru_prev, tail);
  journal_.Set(object->lru_next, kNone);
  if (tail != kNone) {
    journal_.Set(entry(tail)->lru_next, index);
  } else {
    journal_.Set(header_->lru_head, index);
  }
  journal_.Set(header_->lru_tail, index);
  journal_.Set(header_->num_lru, header_->num_lru + 1);
}

void Arena::LruRemove(uint32_t index) {
  ObjectEntry* object = entry(index);
  uint32_t prev = object->lru_prev;
  uint32_t next = object->lru_next;
  if (prev != kNone) {
    journal_.Set(entry(prev)->lru_next, next);
  } else {
    journal_.Set(header_->lru_head, next);
  }
  if (next != kNone) {
    journal_.Set(entry(next)->lru_prev, prev);
  } else {
    journal_.Set(header_->lru_tail, prev);
  }
  journal_.Set(object->lru_prev, kNone);
  journal_.Set(object->lru_next, kNone);
  journal_.Set(header_->num_lru, header_->num_lru - 1);
}

static bool InLru(uint8_t state, uint32_t pin_count, uint8_t delete_pending) {
  return state == kEntrySealed && pin_count == 0 && !delete_pending;
}

// Unlinks an object from the table and the LRU list and frees its block.
Status Arena::FreeObject(uint32_t index) {
  ObjectEntry* object = entry(index);
  if (InLru(object->state, object->pin_count, object->delete_pending)) LruRemove(index);
  uint32_t* link = &buckets()[HashId(object->id) & (header_->num_buckets - 1)];
  while (*link != kNone && *link != index) link = &entry(*link)->chain_next;
  if (*link != index) return kCorrupted;
  journal_.Set(*link, object->chain_next);
  Allocator heap(base_, &header_->heap, &journal_);
  if (heap.Free(object->offset) != kOk) return kCorrupted;
  if (object->state == kEntrySealed) journal_.Set(header_->num_sealed, header_->num_sealed - 1);
  journal_.Set(header_->num_objects, header_->num_objects - 1);
  journal_.Set(header_->object_bytes, header_->object_bytes - object->size);
  journal_.Set(object->state, uint8_t{kEntryFree});
  journal_.Set(object->delete_pending, uint8_t{0});
  journal_.Set(object->chain_next, header_->entry_free_head);
  journal_.Set(header_->entry_free_head, index);
  return kOk;
}

Status Arena::Pin(uint32_t index, uint32_t slot) {
  ObjectEntry* object = entry(index);
  uint32_t record = object->pin_head;
  while (record != kNone && pin_record(record)->process_slot != slot) {
    record = pin_record(record)->next;
  }
  if (record != kNone) {
    journal_.Set(pin_record(record)->count, pin_record(record)->count + 1);
  } else {
    if (header_->pin_free_head != kNone) {
      record = header_->pin_free_head;
      journal_.Set(header_->pin_free_head, pin_record(record)->next);
    } else if (header_->pin_high_water <= header_->num_pin_records) {
      record = header_->pin_high_water;
      journal_.Set(header_->pin_high_water, record + 1);
    } else {
      return kPinTableFull;
    }
    PinRecord fresh = {object->pin_head, 1, slot, 0};
    journal_.Write(pin_record(record), &fresh, sizeof(fresh));
    journal_.Set(object->pin_head, record);
  }
  if (object->pin_count == 0) {
    if (InLru(object->state, 0, object->delete_pending)) LruRemove(index);
    journal_.Set(header_->num_pinned, header_->num_pinned + 1);
  }
  journal_.Set(object->pin_count, object->pin_count + 1);
  journal_.Set(header_->pins, header_->pins + 1);
  return kOk;
}

// ---------------------------------------------------------------------------
// Operations.

Status Arena::CreateObject(const ObjectId& id, uint64_t size, uint64_t* offset) {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  Status status = EnsureProcessSlot();
  if (status != kOk) return status;
  if (Find(id) != kNone) return kObjectExists;

  uint32_t index;
  if (header_->entry_free_head != kNone) {
    index = header_->entry_free_head;
    journal_.Set(header_->entry_free_head, entry(index)->chain_next);
  } else if (header_->entry_high_water <= header_->num_entries) {
    index = header_->entry_high_water;
    journal_.Set(header_->entry_high_water, index + 1);
  } else {
    return kTableFull;
  }
  uint64_t payload;
  Allocator heap(base_, &header_->heap, &journal_);
  status = heap.Allocate(size, index, &payload);
  if (status != kOk) return status;  // the section rolls the entry back

  uint32_t* bucket = &buckets()[HashId(id) & (header_->num_buckets - 1)];
  ObjectEntry fresh;
  std::memset(&fresh, 0, sizeof(fresh));
  fresh.id = id;
  fresh.state = kEntryCreated;
  fresh.creator_slot = static_cast<uint16_t>(process_slot_);
  fresh.chain_next = *bucket;
  fresh.offset = payload;
  fresh.size = size;
  journal_.Write(entry(index), &fresh, sizeof(fresh));
  journal_.Set(*bucket, index);
  journal_.Set(header_->num_objects, header_->num_objects + 1);
  journal_.Set(header_->object_bytes, header_->object_bytes + size);
  section.Commit();
  *offset = payload;
  return kOk;
}

Status Arena::Seal(const ObjectId& id) {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  uint32_t index = Find(id);
  if (index == kNone) return kObjectNotFound;
  ObjectEntry* object = entry(index);
  if (object->state == kEntrySealed) return kObjectAlreadySealed;
  journal_.Set(object->state, uint8_t{kEntrySealed});
  journal_.Set(header_->num_sealed, header_->num_sealed + 1);
  LruAppend(index);  // an unsealed object cannot be pinned, so it is unpinned
  section.Commit();
  return kOk;
}

Status Arena::Abort(const ObjectId& id) {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  uint32_t index = Find(id);
  if (index == kNone) return kObjectNotFound;
  if (entry(index)->state == kEntrySealed) return kObjectAlreadySealed;
  Status status = FreeObject(index);
  if (status != kOk) return status;
  section.Commit();
  return kOk;
}

Status Arena::Get(const ObjectId& id, uint64_t* offset, uint64_t* size) {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  uint32_t index = Find(id);
  if (index == kNone || entry(index)->delete_pending) return kObjectNotFound;
  if (entry(index)->state != kEntrySealed) return kObjectNotSealed;
  Status status = EnsureProcessSlot();
  if (status == kOk) status = Pin(index, static_cast<uint32_t>(process_slot_));
  if (status != kOk) return status;
  section.Commit();
  *offset = entry(index)->offset;
  *size = entry(index)->size;
  return kOk;
}

Status Arena::Release(const ObjectId& id) {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  uint32_t index = Find(id);
  if (index == kNone) return kObjectNotFound;
  if (process_slot_ < 0 ||
      process_slot_fork_generation_ != fork_generation.load(std::memory_order_relaxed)) {
    return kNotPinned;
  }
  uint32_t slot = static_cast<uint32_t>(process_slot_);
  ObjectEntry* object = entry(index);
  uint32_t previous = kNone;
  uint32_t record = object->pin_head;
  while (record != kNone && pin_record(record)->process_slot != slot) {
    previous = record;
    record = pin_record(record)->next;
  }
  if (record == kNone) return kNotPinned;
  PinRecord* pins = pin_record(record);
  if (pins->count > 1) {
    journal_.Set(pins->count, pins->count - 1);
  } else {
    if (previous == kNone) {
      journal_.Set(object->pin_head, pins->next);
    } else {
      journal_.Set(pin_record(previous)->next, pins->next);
    }
    journal_.Set(pins->count, uint32_t{0});
    journal_.Set(pins->next, header_->pin_free_head);
    journal_.Set(header_->pin_free_head, record);
  }
  journal_.Set(object->pin_count, object->pin_count - 1);
  journal_.Set(header_->releases, header_->releases + 1);
  if (object->pin_count == 0) {
    journal_.Set(header_->num_pinned, header_->num_pinned - 1);
    if (object->delete_pending) {
      Status status = FreeObject(index);
      if (status != kOk) return status;
    } else {
      LruAppend(index);
    }
  }
  section.Commit();
  return kOk;
}

Status Arena::Delete(const ObjectId& id, bool* deferred) {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  uint32_t index = Find(id);
  if (index == kNone || entry(index)->delete_pending) return kObjectNotFound;
  ObjectEntry* object = entry(index);
  if (object->state != kEntrySealed) return kObjectNotSealed;
  if (object->pin_count > 0) {
    journal_.Set(object->delete_pending, uint8_t{1});
    *deferred = true;
  } else {
    Status status = FreeObject(index);
    if (status != kOk) return status;
    *deferred = false;
  }
  section.Commit();
  return kOk;
}

Status Arena::Contains(const ObjectId& id, bool* present) {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  uint32_t index = Find(id);
  *present = index != kNone && entry(index)->state == kEntrySealed &&
             !entry(index)->delete_pending;
  return kOk;
}

Status Arena::LruCandidates(uint64_t nbytes, std::vector<ObjectId>* out) {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  uint64_t total = 0;
  for (uint32_t index = header_->lru_head; index != kNone && total < nbytes;
       index = entry(index)->lru_next) {
    out->push_back(entry(index)->id);
    total += entry(index)->size;
  }
  return kOk;
}

Status Arena::ReleasePinsOf(pid_t pid, uint64_t* pins_released, uint64_t* objects_aborted) {
  *pins_released = 0;
  *objects_aborted = 0;
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  for (uint32_t slot = 0; slot < kMaxProcesses; slot++) {
    const ProcessSlot& process = header_->processes[slot];
    if (!process.in_use || process.pid != pid) continue;
    DropSlot(slot, pins_released, objects_aborted);
    if (static_cast<int>(slot) == process_slot_ && process_slot_fork_generation_ == generation) {
      process_slot_ = -1;
    }
  }
  section.Commit();
  return kOk;
}

Status Arena::Prefault(uint64_t offset, uint64_t length) {
  if (offset > capacity_) return kInvalidArgument;
  if (length == 0) length = capacity_ - offset;
  if (length > capacity_ - offset) return kInvalidArgument;
  if (length == 0) return kOk;
  uint64_t page = PageSize();
  uint64_t begin = offset / page * page;
  uint64_t end = RoundUp(offset + length, page);
  if (madvise(base_ + begin, end - begin, MADV_POPULATE_WRITE) == 0) return kOk;
  if (errno != EINVAL) return kSystemError;
  // Kernels before 5.14: add zero to one word of each page, atomically, so a
  // concurrent writer of the same page loses nothing.
  for (uint64_t position = begin; position < end; position += page) {
    __atomic_fetch_add(reinterpret_cast<uint64_t*>(base_ + position), 0, __ATOMIC_RELAXED);
  }
  return kOk;
}

Status Arena::Stats(ArenaStats* stats) {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  Allocator heap(base_, &header_->heap, &journal_);
  HeapStats heap_stats = heap.Stats();
  stats->capacity = capacity_;
  stats->heap_size = heap_stats.heap_size;
  stats->bytes_allocated = heap_stats.bytes_allocated;
  stats->bytes_free = heap_stats.bytes_free;
  stats->largest_free_block = heap_stats.largest_free_payload;
  stats->allocated_blocks = heap_stats.allocated_blocks;
  stats->free_blocks = heap_stats.free_blocks;
  stats->object_bytes = header_->object_bytes;
  stats->num_objects = header_->num_objects;
  stats->num_sealed = header_->num_sealed;
  stats->num_pinned = header_->num_pinned;
  stats->num_lru = header_->num_lru;
  stats->num_processes = header_->num_processes;
  stats->object_entries = header_->num_entries;
  stats->allocations = heap_stats.allocations;
  stats->frees = heap_stats.frees;
  stats->pins = header_->pins;
  stats->releases = header_->releases;
  stats->recoveries = header_->recoveries;
  return kOk;
}

Status Arena::Validate(std::string* error) {
  LockedSection section(this);
  if (section.status() != kOk) return section.status();
  return ValidateLocked(error) ? kOk : kCorrupted;
}

bool Arena::ValidateLocked(std::string* error) {
  std::ostringstream why;
  auto fail = [&](const std::string& reason) {
    if (error != nullptr) *error = reason;
    return false;
  };
  if (journal_.pending() != 0) return fail("journal not empty outside a section");
  Allocator heap(base_, &header_->heap, &journal_);
  std::string heap_error;
  if (!heap.Validate(&heap_error)) return fail("allocator: " + heap_error);

  const uint32_t high_water = header_->entry_high_water;
  if (high_water == 0 || high_water > header_->num_entries + 1) return fail("bad entry high water");
  uint64_t objects = 0, sealed = 0, pinned = 0, lru = 0, bytes = 0, total_pins = 0;
  uint64_t used_records = 0;
  for (uint32_t index = 1; index < high_water; index++) {
    const ObjectEntry* object = entry(index);
    if (object->state == kEntryFree) continue;
    if (object->state != kEntryCreated && object->state != kEntrySealed) {
      why << "entry " << index << ": bad state " << int(object->state);
      return fail(why.str());
    }
    objects++;
    bytes += object->size;
    if (object->state == kEntrySealed) sealed++;
    if (Find(object->id) != index) {
      why << "entry " << index << ": not reachable from its hash bucket";
      return fail(why.str());
    }
    if (heap.OwnerOf(object->offset) != index) {
      why << "entry " << index << ": block at " << object->offset << " is not owned by it";
      return fail(why.str());
    }
    uint64_t block_size =
        reinterpret_cast<const BlockHeader*>(base_ + object->offset - kBlockHeaderSize)->size;
    if (Allocator::BlockSizeFor(object->size) > block_size) {
      why << "entry " << index << ": block too small for its size";
      return fail(why.str());
    }
    uint64_t counted = 0, records = 0;
    for (uint32_t record = object->pin_head; record != kNone; record = pin_record(record)->next) {
      const PinRecord* pins = pin_record(record);
      if (record >= header_->pin_high_water || pins->count == 0 ||
          pins->process_slot >= kMaxProcesses || !header_->processes[pins->process_slot].in_use ||
          ++records > kMaxProcesses) {
        why << "entry " << index << ": bad pin record " << record;
        return fail(why.str());
      }
      counted += pins->count;
    }
    used_records += records;
    if (counted != object->pin_count) {
      why << "entry " << index << ": pin records add up to " << counted << ", pin_count is "
          << object->pin_count;
      return fail(why.str());
    }
    if (object->state == kEntryCreated && (object->pin_count != 0 || object->delete_pending)) {
      why << "entry " << index << ": unsealed but pinned or delete pending";
      return fail(why.str());
    }
    if (object->delete_pending && object->pin_count == 0) {
      why << "entry " << index << ": delete pending without pins";
      return fail(why.str());
    }
    total_pins += object->pin_count;
    if (object->pin_count > 0) pinned++;
    if (InLru(object->state, object->pin_count, object->delete_pending)) lru++;
  }
  if (objects != header_->num_objects || sealed != header_->num_sealed ||
      pinned != header_->num_pinned || lru != header_->num_lru || bytes != header_->object_bytes) {
    why << "table counts: walked objects/sealed/pinned/lru/bytes " << objects << "/" << sealed << "/"
        << pinned << "/" << lru << "/" << bytes << ", recorded " << header_->num_objects << "/"
        << header_->num_sealed << "/" << header_->num_pinned << "/" << header_->num_lru << "/"
        << header_->object_bytes;
    return fail(why.str());
  }
  if (objects != header_->heap.allocated_blocks) {
    why << objects << " objects but " << header_->heap.allocated_blocks << " allocated blocks";
    return fail(why.str());
  }
  if (header_->heap.allocations - header_->heap.frees != header_->heap.allocated_blocks) {
    return fail("allocations - frees != allocated blocks");
  }
  if (header_->pins - header_->releases != total_pins) {
    why << "pins " << header_->pins << " - releases " << header_->releases << " != pins held "
        << total_pins;
    return fail(why.str());
  }

  uint64_t chained = 0;
  for (uint32_t bucket = 0; bucket < header_->num_buckets; bucket++) {
    for (uint32_t index = buckets()[bucket]; index != kNone; index = entry(index)->chain_next) {
      if (index >= high_water || entry(index)->state == kEntryFree || ++chained > objects) {
        why << "bucket " << bucket << ": bad chain member " << index;
        return fail(why.str());
      }
    }
  }
  if (chained != objects) return fail("buckets do not hold every object");

  uint64_t pooled = 0;
  for (uint32_t index = header_->entry_free_head; index != kNone; index = entry(index)->chain_next) {
    if (index >= high_water || entry(index)->state != kEntryFree || ++pooled > high_water) {
      return fail("bad entry in the free pool");
    }
  }
  if (objects + pooled != high_water - 1u) return fail("entries leaked from the free pool");

  uint64_t pooled_records = 0;
  for (uint32_t record = header_->pin_free_head; record != kNone;
       record = pin_record(record)->next) {
    if (record >= header_->pin_high_water || ++pooled_records > header_->pin_high_water) {
      return fail("bad pin record in the free pool");
    }
  }
  if (used_records + pooled_records != header_->pin_high_water - 1u) {
    return fail("pin records leaked from the free pool");
  }

  uint64_t listed = 0;
  uint32_t previous = kNone;
  for (uint32_t index = header_->lru_head; index != kNone; index = entry(index)->lru_next) {
    const ObjectEntry* object = entry(index);
    if (index >= high_water || !InLru(object->state, object->pin_count, object->delete_pending) ||
        object->lru_prev != previous || ++listed > lru) {
      why << "LRU list: bad member " << index;
      return fail(why.str());
    }
    previous = index;
  }
  if (listed != lru || header_->lru_tail != previous) return fail("LRU list length or tail wrong");

  uint32_t processes = 0;
  for (uint32_t slot = 0; slot < kMaxProcesses; slot++) processes += header_->processes[slot].in_use;
  if (processes != header_->num_processes) return fail("process count wrong");
  return true;
}

// ---------------------------------------------------------------------------
// Test hooks.

void Arena::DebugLockAndHang(int notify_fd) {
  bool waited = false;
  void* wait_token = nullptr;
  Lock(&waited, &wait_token);
  if (notify_fd >= 0) {
    char byte = 'L';
    ssize_t ignored = write(notify_fd, &byte, 1);
    (void)ignored;
  }
  for (;;) pause();
}

}  // namespace rayx
