// arena_test.cc -- tests of the allocator, the journal and the shared-memory
// arena, without Python.
//
// The allocator tests run on a private buffer and check the accounting after
// every allocate, failed allocate and free. The arena tests use real files in
// /dev/shm (removed at the end of each test) and real processes: forked
// children that hammer the arena at once, a child SIGKILLed while it holds
// the lock, and -- the strongest check of the journal -- a child killed after
// each single metadata write of an operation, after which the state must be
// exactly the state before the operation and validate() must pass.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "allocator.h"
#include "arena.h"
#include "journal.h"
#include "testing.h"

using namespace rayx;

namespace {

// ---------------------------------------------------------------------------
// Helpers.

// A heap on a private buffer: [HeapState][JournalLog][padding][blocks...].
struct PrivateHeap {
  explicit PrivateHeap(uint64_t heap_bytes) {
    begin = (sizeof(HeapState) + sizeof(JournalLog) + 4095) / 4096 * 4096;
    size = begin + heap_bytes;
    memory = static_cast<uint8_t*>(std::aligned_alloc(4096, size));
    std::memset(memory, 0, size);  // like a fresh shared-memory file
    state = reinterpret_cast<HeapState*>(memory);
    log = reinterpret_cast<JournalLog*>(memory + sizeof(HeapState));
    journal.reset(new Journal(memory, log));
    allocator.reset(new Allocator(memory, state, journal.get()));
    status = Allocator::Format(memory, state, begin, size);
  }
  ~PrivateHeap() { std::free(memory); }
  uint64_t heap_size() const { return size - begin; }

  uint8_t* memory;
  uint64_t begin, size;
  HeapState* state;
  JournalLog* log;
  std::unique_ptr<Journal> journal;
  std::unique_ptr<Allocator> allocator;
  Status status;
};

bool HeapValid(const Allocator& allocator) {
  std::string error;
  if (allocator.Validate(&error)) return true;
  std::fprintf(stderr, "  allocator invalid: %s\n", error.c_str());
  return false;
}

bool ArenaValid(Arena* arena) {
  std::string error;
  Status status = arena->Validate(&error);
  if (status == kOk) return true;
  std::fprintf(stderr, "  arena invalid (%s): %s\n", StatusMessage(status), error.c_str());
  return false;
}

ObjectId MakeId(uint64_t number) {
  ObjectId id;
  std::memset(id.bytes, 0xAB, sizeof(id.bytes));
  std::memcpy(id.bytes + 12, &number, sizeof(number));
  return id;
}

// A unique /dev/shm path, unlinked when the test ends.
struct ShmPath {
  ShmPath() {
    static int counter = 0;
    path = "/dev/shm/rayx-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    unlink(path.c_str());
  }
  ~ShmPath() { unlink(path.c_str()); }
  std::string path;
};

std::unique_ptr<Arena> MakeArena(const std::string& path, uint64_t capacity,
                                 uint64_t object_entries = 0) {
  ArenaOptions options;
  options.object_entries = object_entries;
  Arena* arena = nullptr;
  if (Arena::Create(path, capacity, options, &arena) != kOk) return nullptr;
  return std::unique_ptr<Arena>(arena);
}

std::unique_ptr<Arena> AttachArena(const std::string& path) {
  Arena* arena = nullptr;
  if (Arena::Attach(path, &arena) != kOk) return nullptr;
  return std::unique_ptr<Arena>(arena);
}

ArenaStats StatsOf(Arena* arena) {
  ArenaStats stats;
  std::memset(&stats, 0, sizeof(stats));
  arena->Stats(&stats);
  return stats;
}

Status Put(Arena* arena, uint64_t number, uint64_t size) {
  uint64_t offset;
  Status status = arena->CreateObject(MakeId(number), size, &offset);
  if (status != kOk) return status;
  std::memset(arena->base() + offset, static_cast<int>(number), size);
  return arena->Seal(MakeId(number));
}

// Waits for `pid`; returns its exit status, or 128 + signal.
int WaitChild(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

// The parts of the stats an all-or-nothing operation must restore.
std::vector<uint64_t> Shape(const ArenaStats& stats) {
  return {stats.bytes_allocated, stats.bytes_free,   stats.allocated_blocks, stats.free_blocks,
          stats.num_objects,     stats.num_sealed,   stats.num_pinned,       stats.num_lru,
          stats.object_bytes,    stats.pins - stats.releases};
}

}  // namespace

// ---------------------------------------------------------------------------
// Allocator.

TEST(allocator_accounting_after_every_step) {
  PrivateHeap heap(1 << 20);
  CHECK_EQ(heap.status, kOk);
  Allocator& allocator = *heap.allocator;
  CHECK(HeapValid(allocator));
  CHECK_EQ(allocator.Stats().bytes_free, heap.heap_size());
  CHECK_EQ(allocator.Stats().largest_free_payload, heap.heap_size() - kBlockHeaderSize);

  std::vector<uint64_t> sizes = {0, 1, 63, 64, 65, 1000, 4096, 100000, 12345, 7};
  std::vector<uint64_t> offsets;
  uint64_t expected_allocated = 0;
  for (uint64_t size : sizes) {
    uint64_t offset = 0;
    CHECK_EQ(allocator.Allocate(size, 7, &offset), kOk);
    heap.journal->Commit();
    CHECK_EQ(offset % kAlignment, 0u);
    CHECK_EQ(allocator.OwnerOf(offset), 7u);
    expected_allocated += Allocator::BlockSizeFor(size);
    HeapStats stats = allocator.Stats();
    CHECK_EQ(stats.bytes_allocated, expected_allocated);
    CHECK_EQ(stats.bytes_allocated + stats.bytes_free, heap.heap_size());
    CHECK_EQ(stats.allocated_blocks, offsets.size() + 1);
    CHECK(HeapValid(allocator));
    offsets.push_back(offset);
  }
  // A request larger than what is free fails and changes nothing.
  HeapStats before = allocator.Stats();
  uint64_t ignored;
  CHECK_EQ(allocator.Allocate(heap.heap_size(), 1, &ignored), kOutOfMemory);
  CHECK_EQ(allocator.Allocate(before.largest_free_payload + 1, 1, &ignored), kOutOfMemory);
  CHECK_EQ(allocator.Allocate(~uint64_t{0} - 10, 1, &ignored), kOutOfMemory);
  CHECK_EQ(heap.journal->pending(), 0u);
  CHECK_EQ(allocator.Stats().bytes_allocated, before.bytes_allocated);
  CHECK(HeapValid(allocator));
  // Freeing a bogus offset is refused.
  CHECK_EQ(allocator.Free(offsets[0] + 64), kInvalidArgument);
  CHECK_EQ(allocator.Free(3), kInvalidArgument);

  for (size_t i = 0; i < offsets.size(); i++) {
    CHECK_EQ(allocator.Free(offsets[i]), kOk);
    heap.journal->Commit();
    expected_allocated -= Allocator::BlockSizeFor(sizes[i]);
    HeapStats stats = allocator.Stats();
    CHECK_EQ(stats.bytes_allocated, expected_allocated);
    CHECK_EQ(stats.bytes_allocated + stats.bytes_free, heap.heap_size());
    CHECK(HeapValid(allocator));
  }
  CHECK_EQ(allocator.Free(offsets[0]), kInvalidArgument);  // double free
  HeapStats stats = allocator.Stats();
  CHECK_EQ(stats.free_blocks, 1u);
  CHECK_EQ(stats.largest_free_payload, heap.heap_size() - kBlockHeaderSize);
  CHECK_EQ(stats.allocations, stats.frees);
}

static void CoalesceInOrder(const char* order_name, std::vector<size_t> order) {
  PrivateHeap heap(64 * 1024);
  Allocator& allocator = *heap.allocator;
  std::vector<uint64_t> offsets;
  uint64_t offset;
  while (allocator.Allocate(1000, 1, &offset) == kOk) {
    heap.journal->Commit();
    offsets.push_back(offset);
  }
  CHECK(offsets.size() > 10);
  if (order.empty()) {
    for (size_t i = 0; i < offsets.size(); i++) order.push_back(i);
    std::mt19937 random(42);
    std::shuffle(order.begin(), order.end(), random);
  }
  for (size_t i : order) {
    if (i >= offsets.size()) continue;
    CHECK_EQ(allocator.Free(offsets[i]), kOk);
    heap.journal->Commit();
    CHECK(HeapValid(allocator));
  }
  for (size_t i = 0; i < offsets.size(); i++) {
    if (std::find(order.begin(), order.end(), i) == order.end()) allocator.Free(offsets[i]);
  }
  heap.journal->Commit();
  HeapStats stats = allocator.Stats();
  if (stats.free_blocks != 1 || stats.largest_free_payload != heap.heap_size() - kBlockHeaderSize) {
    testing::ReportFailure(__FILE__, __LINE__, std::string("did not coalesce: ") + order_name);
  }
}

TEST(allocator_coalesces_in_any_order) {
  std::vector<size_t> forward, backward, odd_then_even;
  for (size_t i = 0; i < 64; i++) forward.push_back(i);
  backward.assign(forward.rbegin(), forward.rend());
  for (size_t i = 1; i < 64; i += 2) odd_then_even.push_back(i);
  for (size_t i = 0; i < 64; i += 2) odd_then_even.push_back(i);
  CoalesceInOrder("forward", forward);
  CoalesceInOrder("backward", backward);
  CoalesceInOrder("odd then even", odd_then_even);
  CoalesceInOrder("random", {});
}

TEST(allocator_fragmentation_and_recovery) {
  PrivateHeap heap(64 * 1024);
  Allocator& allocator = *heap.allocator;
  std::vector<uint64_t> offsets;
  uint64_t offset;
  while (allocator.Allocate(960, 1, &offset) == kOk) {  // 1 KiB blocks
    heap.journal->Commit();
    offsets.push_back(offset);
  }
  // Free every other block: lots of free memory, but only in 1 KiB holes.
  for (size_t i = 0; i < offsets.size(); i += 2) {
    allocator.Free(offsets[i]);
    heap.journal->Commit();
  }
  HeapStats stats = allocator.Stats();
  CHECK(stats.bytes_free >= 30 * 1024u);
  CHECK_EQ(stats.largest_free_payload, 1024u - kBlockHeaderSize);
  CHECK_EQ(allocator.Allocate(2000, 1, &offset), kOutOfMemory);
  CHECK(HeapValid(allocator));
  // Freeing one neighbour merges three blocks into one.
  CHECK_EQ(allocator.Free(offsets[1]), kOk);
  heap.journal->Commit();
  CHECK_EQ(allocator.Stats().largest_free_payload, 3 * 1024u - kBlockHeaderSize);
  CHECK_EQ(allocator.Allocate(2000, 1, &offset), kOk);
  CHECK_EQ(offset, offsets[0]);
  heap.journal->Commit();
  CHECK(HeapValid(allocator));
}

TEST(journal_rollback_restores_the_heap_exactly) {
  PrivateHeap heap(256 * 1024);
  Allocator& allocator = *heap.allocator;
  std::vector<uint64_t> offsets;
  uint64_t offset;
  for (int i = 0; i < 20; i++) {
    allocator.Allocate(100 * i + 1, 1, &offset);
    offsets.push_back(offset);
  }
  for (int i = 0; i < 20; i += 3) allocator.Free(offsets[i]);
  heap.journal->Commit();
  std::vector<uint8_t> state_before(reinterpret_cast<uint8_t*>(heap.state),
                                    reinterpret_cast<uint8_t*>(heap.state) + sizeof(HeapState));
  std::vector<uint8_t> blocks_before(heap.memory + heap.begin, heap.memory + heap.size);
  // A section with splits, merges and bin changes...
  allocator.Free(offsets[1]);
  allocator.Free(offsets[4]);
  allocator.Allocate(5000, 2, &offset);
  allocator.Allocate(70, 2, &offset);
  allocator.Free(offsets[2]);
  CHECK(heap.journal->pending() > 0);
  // ...is undone byte for byte.
  heap.journal->Rollback();
  CHECK_EQ(heap.journal->pending(), 0u);
  CHECK(std::memcmp(state_before.data(), heap.state, sizeof(HeapState)) == 0);
  CHECK(std::memcmp(blocks_before.data(), heap.memory + heap.begin, blocks_before.size()) == 0);
  CHECK(HeapValid(allocator));
}

// ---------------------------------------------------------------------------
// Arena, one process.

TEST(arena_create_seal_get_release_delete) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 8 << 20);
  CHECK(arena != nullptr);
  CHECK(ArenaValid(arena.get()));
  ObjectId id = MakeId(1);
  uint64_t offset, size;
  bool present, deferred;

  CHECK_EQ(arena->Get(id, &offset, &size), kObjectNotFound);
  CHECK_EQ(arena->CreateObject(id, 1000, &offset), kOk);
  CHECK_EQ(offset % 64, 0u);
  std::memset(arena->base() + offset, 'x', 1000);
  CHECK_EQ(arena->CreateObject(id, 10, &offset), kObjectExists);
  CHECK_EQ(arena->Contains(id, &present), kOk);
  CHECK(!present);
  CHECK_EQ(arena->Get(id, &offset, &size), kObjectNotSealed);
  CHECK_EQ(arena->Delete(id, &deferred), kObjectNotSealed);
  CHECK_EQ(arena->Seal(id), kOk);
  CHECK_EQ(arena->Seal(id), kObjectAlreadySealed);
  CHECK_EQ(arena->Abort(id), kObjectAlreadySealed);
  CHECK_EQ(arena->Contains(id, &present), kOk);
  CHECK(present);
  CHECK_EQ(arena->Release(id), kNotPinned);
  CHECK_EQ(arena->Get(id, &offset, &size), kOk);
  CHECK_EQ(size, 1000u);
  CHECK_EQ(arena->base()[offset + 999], 'x');
  CHECK_EQ(StatsOf(arena.get()).num_pinned, 1u);
  CHECK(ArenaValid(arena.get()));
  CHECK_EQ(arena->Release(id), kOk);
  CHECK_EQ(arena->Release(id), kNotPinned);
  CHECK_EQ(arena->Delete(id, &deferred), kOk);
  CHECK(!deferred);
  CHECK_EQ(arena->Delete(id, &deferred), kObjectNotFound);
  CHECK_EQ(arena->Seal(MakeId(2)), kObjectNotFound);
  // Abort of an unsealed object.
  CHECK_EQ(arena->CreateObject(MakeId(3), 100, &offset), kOk);
  CHECK_EQ(arena->Abort(MakeId(3)), kOk);
  ArenaStats stats = StatsOf(arena.get());
  CHECK_EQ(stats.num_objects, 0u);
  CHECK_EQ(stats.free_blocks, 1u);
  CHECK_EQ(stats.allocations, stats.frees);
  CHECK_EQ(stats.pins, stats.releases);
  CHECK(ArenaValid(arena.get()));
}

TEST(arena_full_and_table_full_are_clean_errors) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 4 << 20, /*object_entries=*/64);
  CHECK(arena != nullptr);
  ArenaStats empty = StatsOf(arena.get());
  uint64_t offset;
  CHECK_EQ(arena->CreateObject(MakeId(1), empty.heap_size, &offset), kOutOfMemory);
  CHECK_EQ(arena->CreateObject(MakeId(1), ~uint64_t{0}, &offset), kOutOfMemory);
  CHECK(Shape(StatsOf(arena.get())) == Shape(empty));
  CHECK_EQ(arena->CreateObject(MakeId(1), empty.largest_free_block, &offset), kOk);
  CHECK_EQ(StatsOf(arena.get()).bytes_free, 0u);
  CHECK_EQ(Put(arena.get(), 2, 1), kOutOfMemory);
  CHECK(ArenaValid(arena.get()));
  CHECK_EQ(arena->Abort(MakeId(1)), kOk);
  // 64 entries: the 65th object does not fit in the table.
  for (uint64_t i = 0; i < 64; i++) CHECK_EQ(Put(arena.get(), 100 + i, 100), kOk);
  CHECK_EQ(Put(arena.get(), 1000, 100), kTableFull);
  CHECK(ArenaValid(arena.get()));
  bool deferred;
  CHECK_EQ(arena->Delete(MakeId(100), &deferred), kOk);
  CHECK_EQ(Put(arena.get(), 1000, 100), kOk);  // the freed entry is reused
  CHECK(ArenaValid(arena.get()));
}

TEST(arena_lru_order) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 8 << 20);
  CHECK(arena != nullptr);
  for (uint64_t i = 1; i <= 4; i++) CHECK_EQ(Put(arena.get(), i, 1000 * i), kOk);
  auto candidates = [&](uint64_t nbytes) {
    std::vector<ObjectId> ids;
    arena->LruCandidates(nbytes, &ids);
    std::vector<uint64_t> numbers;
    for (const ObjectId& id : ids) {
      uint64_t number;
      std::memcpy(&number, id.bytes + 12, 8);
      numbers.push_back(number);
    }
    return numbers;
  };
  CHECK(candidates(1 << 30) == (std::vector<uint64_t>{1, 2, 3, 4}));
  CHECK(candidates(0).empty());
  CHECK(candidates(1000) == (std::vector<uint64_t>{1}));
  CHECK(candidates(1001) == (std::vector<uint64_t>{1, 2}));
  uint64_t offset, size;
  CHECK_EQ(arena->Get(MakeId(1), &offset, &size), kOk);  // pinned: leaves the list
  CHECK(candidates(1 << 30) == (std::vector<uint64_t>{2, 3, 4}));
  CHECK_EQ(arena->Get(MakeId(3), &offset, &size), kOk);
  CHECK_EQ(arena->Get(MakeId(3), &offset, &size), kOk);
  CHECK_EQ(arena->Release(MakeId(1)), kOk);  // unpinned: most recently used
  CHECK(candidates(1 << 30) == (std::vector<uint64_t>{2, 4, 1}));
  CHECK_EQ(arena->Release(MakeId(3)), kOk);  // still pinned once
  CHECK(candidates(1 << 30) == (std::vector<uint64_t>{2, 4, 1}));
  CHECK_EQ(arena->Release(MakeId(3)), kOk);
  CHECK(candidates(1 << 30) == (std::vector<uint64_t>{2, 4, 1, 3}));
  bool deferred;
  CHECK_EQ(arena->Delete(MakeId(4), &deferred), kOk);
  CHECK(candidates(1 << 30) == (std::vector<uint64_t>{2, 1, 3}));
  CHECK(ArenaValid(arena.get()));
}

TEST(arena_delete_of_pinned_object_is_deferred) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 8 << 20);
  CHECK(arena != nullptr);
  CHECK_EQ(Put(arena.get(), 1, 5000), kOk);
  uint64_t offset, size;
  bool deferred = false, present = true;
  CHECK_EQ(arena->Get(MakeId(1), &offset, &size), kOk);
  CHECK_EQ(arena->Get(MakeId(1), &offset, &size), kOk);
  CHECK_EQ(arena->Delete(MakeId(1), &deferred), kOk);
  CHECK(deferred);
  CHECK_EQ(arena->Contains(MakeId(1), &present), kOk);
  CHECK(!present);
  CHECK_EQ(arena->Get(MakeId(1), &offset, &size), kObjectNotFound);
  CHECK_EQ(arena->Delete(MakeId(1), &deferred), kObjectNotFound);
  CHECK_EQ(arena->CreateObject(MakeId(1), 10, &offset), kObjectExists);
  std::vector<ObjectId> candidates;
  arena->LruCandidates(1 << 30, &candidates);
  CHECK(candidates.empty());
  CHECK_EQ(StatsOf(arena.get()).num_objects, 1u);
  CHECK(ArenaValid(arena.get()));
  CHECK_EQ(arena->Release(MakeId(1)), kOk);
  CHECK_EQ(StatsOf(arena.get()).num_objects, 1u);  // one pin left
  CHECK_EQ(arena->Release(MakeId(1)), kOk);
  ArenaStats stats = StatsOf(arena.get());
  CHECK_EQ(stats.num_objects, 0u);
  CHECK_EQ(stats.bytes_allocated, 0u);
  CHECK_EQ(Put(arena.get(), 1, 10), kOk);
  CHECK(ArenaValid(arena.get()));
}

TEST(arena_attach_checks_the_file) {
  ShmPath file;
  Arena* arena = nullptr;
  CHECK_EQ(Arena::Attach(file.path, &arena), kSystemError);  // no such file
  FILE* junk = std::fopen(file.path.c_str(), "w");
  std::fputs("not an arena, just some bytes that are long enough? no.", junk);
  std::fclose(junk);
  CHECK_EQ(Arena::Attach(file.path, &arena), kBadSegment);
  CHECK_EQ(Arena::Create(file.path, 1 << 20, ArenaOptions(), &arena), kSystemError);  // exists
  unlink(file.path.c_str());
  CHECK_EQ(Arena::Create(file.path, 4096, ArenaOptions(), &arena), kInvalidArgument);
  CHECK(access(file.path.c_str(), F_OK) != 0);  // nothing left behind
  ArenaOptions populate;
  populate.populate = true;
  CHECK_EQ(Arena::Create(file.path, 16 << 20, populate, &arena), kOk);
  std::unique_ptr<Arena> owner(arena);
  std::unique_ptr<Arena> second = AttachArena(file.path);
  CHECK(second != nullptr);
  CHECK_EQ(StatsOf(owner.get()).num_processes, 2u);
  CHECK_EQ(Put(owner.get(), 1, 100), kOk);
  uint64_t offset, size;
  CHECK_EQ(second->Get(MakeId(1), &offset, &size), kOk);
  CHECK_EQ(second->base()[offset], 1);
  second.reset();  // detaching drops its pin
  ArenaStats stats = StatsOf(owner.get());
  CHECK_EQ(stats.num_processes, 1u);
  CHECK_EQ(stats.num_pinned, 0u);
  CHECK(ArenaValid(owner.get()));
}

TEST(arena_prefault) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 32 << 20);
  CHECK(arena != nullptr);
  CHECK_EQ(Put(arena.get(), 1, 3 << 20), kOk);
  uint64_t offset, size;
  CHECK_EQ(arena->Get(MakeId(1), &offset, &size), kOk);
  CHECK_EQ(arena->Prefault(0, 0), kOk);
  CHECK_EQ(arena->Prefault(12345, 100000), kOk);
  CHECK_EQ(arena->Prefault(arena->capacity(), 0), kOk);
  CHECK_EQ(arena->Prefault(arena->capacity() + 1, 0), kInvalidArgument);
  CHECK_EQ(arena->Prefault(10, arena->capacity()), kInvalidArgument);
  CHECK_EQ(arena->base()[offset + size - 1], 1);  // data untouched
  CHECK(ArenaValid(arena.get()));
}

// ---------------------------------------------------------------------------
// Arena, several processes.

TEST(arena_many_processes_at_once) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 64 << 20);
  CHECK(arena != nullptr);
  for (uint64_t i = 0; i < 16; i++) CHECK_EQ(Put(arena.get(), 1000000 + i, 4096), kOk);
  const int kChildren = 6;
  std::vector<pid_t> children;
  for (int child = 0; child < kChildren; child++) {
    pid_t pid = fork();
    if (pid == 0) {
      std::unique_ptr<Arena> mine = AttachArena(file.path);
      CHILD_CHECK(mine != nullptr);
      std::mt19937 random(child);
      std::vector<uint64_t> live;
      for (int step = 0; step < 1500; step++) {
        uint64_t number = uint64_t(child) * 100000 + step;
        uint64_t offset, size;
        bool deferred;
        switch (random() % 4) {
          case 0:
          case 1: {
            Status status = Put(mine.get(), number, 1 + random() % 50000);
            CHILD_CHECK(status == kOk || status == kOutOfMemory);
            if (status == kOk) live.push_back(number);
            break;
          }
          case 2:
            if (!live.empty()) {
              size_t pick = random() % live.size();
              CHILD_CHECK(mine->Delete(MakeId(live[pick]), &deferred) == kOk);
              live.erase(live.begin() + pick);
            }
            break;
          case 3: {
            ObjectId shared = MakeId(1000000 + random() % 16);
            CHILD_CHECK(mine->Get(shared, &offset, &size) == kOk);
            CHILD_CHECK(size == 4096);
            CHILD_CHECK(mine->Release(shared) == kOk);
            break;
          }
        }
      }
      for (uint64_t number : live) {
        bool deferred;
        CHILD_CHECK(mine->Delete(MakeId(number), &deferred) == kOk);
      }
      std::string error;
      CHILD_CHECK(mine->Validate(&error) == kOk);
      mine.reset();  // detach: gives the process slot back
      _exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) CHECK_EQ(WaitChild(pid), 0);
  ArenaStats stats = StatsOf(arena.get());
  CHECK_EQ(stats.num_objects, 16u);
  CHECK_EQ(stats.num_processes, 1u);
  CHECK_EQ(stats.num_pinned, 0u);
  CHECK_EQ(stats.pins, stats.releases);
  CHECK(ArenaValid(arena.get()));
}

TEST(arena_survives_a_process_killed_holding_the_lock) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 8 << 20);
  CHECK(arena != nullptr);
  CHECK_EQ(Put(arena.get(), 1, 100), kOk);
  int pipe_fds[2];
  CHECK_EQ(pipe(pipe_fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    std::unique_ptr<Arena> mine = AttachArena(file.path);
    CHILD_CHECK(mine != nullptr);
    mine->DebugLockAndHang(pipe_fds[1]);
    _exit(1);
  }
  char byte = 0;
  CHECK_EQ(read(pipe_fds[0], &byte, 1), 1);  // the child holds the lock now
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  kill(pid, SIGKILL);
  CHECK_EQ(WaitChild(pid), 128 + SIGKILL);
  alarm(60);  // a wedged lock fails the run instead of hanging it
  CHECK_EQ(Put(arena.get(), 2, 100), kOk);
  alarm(0);
  ArenaStats stats = StatsOf(arena.get());
  CHECK_EQ(stats.recoveries, 1u);
  CHECK_EQ(stats.num_processes, 2u);  // the dead child's slot, until release_pins_of
  uint64_t pins, aborted;
  CHECK_EQ(arena->ReleasePinsOf(pid, &pins, &aborted), kOk);
  CHECK_EQ(StatsOf(arena.get()).num_processes, 1u);
  CHECK(ArenaValid(arena.get()));
}

namespace {

// Lock-wait hooks that count their calls; end_wait uses the arena, which
// would deadlock if it ran with the mutex still held.
struct WaitHookLog {
  std::atomic<int> begins{0};
  std::atomic<int> ends{0};
  std::atomic<int> tokens_matched{0};
  std::atomic<bool> ends_could_lock{false};
  Arena* arena = nullptr;
};
WaitHookLog* wait_hook_log = nullptr;
int wait_hook_token = 0;

void* CountingBeginWait() {
  wait_hook_log->begins++;
  return &wait_hook_token;
}

void CountingEndWait(void* token) {
  if (token == &wait_hook_token) wait_hook_log->tokens_matched++;
  bool present = false;
  wait_hook_log->ends_could_lock = wait_hook_log->arena->Contains(MakeId(1), &present) == kOk;
  wait_hook_log->ends++;
}

}  // namespace

TEST(arena_lock_wait_hooks_run_only_around_a_wait) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 8 << 20);
  CHECK(arena != nullptr);
  WaitHookLog log;
  log.arena = arena.get();
  wait_hook_log = &log;
  LockWaitHooks hooks;
  hooks.begin_wait = CountingBeginWait;
  hooks.end_wait = CountingEndWait;
  SetLockWaitHooks(hooks);
  // Uncontended: no hook runs.
  CHECK_EQ(Put(arena.get(), 1, 100), kOk);
  uint64_t offset, size;
  CHECK_EQ(arena->Get(MakeId(1), &offset, &size), kOk);
  CHECK_EQ(arena->Release(MakeId(1)), kOk);
  CHECK_EQ(log.begins.load(), 0);
  // A child holds the lock: the put waits, between begin_wait and end_wait.
  int pipe_fds[2];
  CHECK_EQ(pipe(pipe_fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    SetLockWaitHooks(LockWaitHooks());
    std::unique_ptr<Arena> mine = AttachArena(file.path);
    CHILD_CHECK(mine != nullptr);
    mine->DebugLockAndHang(pipe_fds[1]);
    _exit(1);
  }
  char byte = 0;
  CHECK_EQ(read(pipe_fds[0], &byte, 1), 1);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  alarm(60);  // a wedged lock fails the run instead of hanging it
  Status put_status = kSystemError;
  std::thread waiter([&] { put_status = Put(arena.get(), 2, 100); });
  while (log.begins.load() == 0) usleep(1000);
  CHECK_EQ(log.ends.load(), 0);  // still waiting
  kill(pid, SIGKILL);
  CHECK_EQ(WaitChild(pid), 128 + SIGKILL);
  waiter.join();
  alarm(0);
  CHECK_EQ(put_status, kOk);
  // The create waited; the seal after it did not.
  CHECK_EQ(log.begins.load(), 1);
  CHECK_EQ(log.ends.load(), 1);
  CHECK_EQ(log.tokens_matched.load(), 1);
  CHECK(log.ends_could_lock.load());
  SetLockWaitHooks(LockWaitHooks());
  wait_hook_log = nullptr;
  uint64_t pins, aborted;
  CHECK_EQ(arena->ReleasePinsOf(pid, &pins, &aborted), kOk);
  CHECK(ArenaValid(arena.get()));
}

TEST(arena_release_pins_of_a_dead_process) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 8 << 20);
  CHECK(arena != nullptr);
  for (uint64_t i = 1; i <= 3; i++) CHECK_EQ(Put(arena.get(), i, 1000), kOk);
  uint64_t offset, size;
  CHECK_EQ(arena->Get(MakeId(3), &offset, &size), kOk);  // the parent's own pin
  pid_t pid = fork();
  if (pid == 0) {
    std::unique_ptr<Arena> mine = AttachArena(file.path);
    CHILD_CHECK(mine != nullptr);
    CHILD_CHECK(mine->Get(MakeId(1), &offset, &size) == kOk);
    CHILD_CHECK(mine->Get(MakeId(1), &offset, &size) == kOk);
    CHILD_CHECK(mine->Get(MakeId(2), &offset, &size) == kOk);
    CHILD_CHECK(mine->Get(MakeId(3), &offset, &size) == kOk);
    CHILD_CHECK(mine->CreateObject(MakeId(4), 500, &offset) == kOk);  // never sealed
    raise(SIGKILL);
  }
  CHECK_EQ(WaitChild(pid), 128 + SIGKILL);
  ArenaStats stats = StatsOf(arena.get());
  CHECK_EQ(stats.num_pinned, 3u);
  CHECK_EQ(stats.num_objects, 4u);
  bool deferred;
  CHECK_EQ(arena->Delete(MakeId(1), &deferred), kOk);
  CHECK(deferred);
  uint64_t pins = 0, aborted = 0;
  CHECK_EQ(arena->ReleasePinsOf(pid, &pins, &aborted), kOk);
  CHECK_EQ(pins, 4u);
  CHECK_EQ(aborted, 1u);
  stats = StatsOf(arena.get());
  CHECK_EQ(stats.num_objects, 2u);  // 1 freed (deferred delete), 4 aborted
  CHECK_EQ(stats.num_pinned, 1u);   // the parent's pin on 3 stays
  CHECK_EQ(stats.num_processes, 1u);
  CHECK_EQ(stats.pins - stats.releases, 1u);
  std::vector<ObjectId> candidates;
  arena->LruCandidates(1 << 30, &candidates);
  CHECK_EQ(candidates.size(), 1u);  // just 2
  CHECK(ArenaValid(arena.get()));
  CHECK_EQ(arena->Release(MakeId(3)), kOk);
  CHECK(ArenaValid(arena.get()));
}

// Runs `operation` in a child that is SIGKILLed after its n-th metadata write,
// for n = 1, 2, ... until the child survives. After each kill, a section the
// child was in is rolled back (so a one-section operation with no `prepare`
// leaves the arena exactly as before), and once release_pins_of has dropped
// what the dead child held, every operation leaves it as before.
static void KillAtEveryWrite(const char* name, Arena* arena, const std::string& path,
                             const std::function<void(Arena*)>& prepare, bool one_section,
                             const std::function<Status(Arena*)>& operation) {
  for (uint32_t n = 1; n < kJournalCapacity; n++) {
    ArenaStats before = StatsOf(arena);
    pid_t pid = fork();
    if (pid == 0) {
      std::unique_ptr<Arena> mine = AttachArena(path);
      CHILD_CHECK(mine != nullptr);
      if (prepare) prepare(mine.get());
      mine->DebugCrashAfterWrites(n);
      Status status = operation(mine.get());
      CHILD_CHECK(status == kOk);
      mine->DebugCrashAfterWrites(0);
      mine.release();  // keep the slot and pins, like a process that exits abruptly
      _exit(0);
    }
    int exit_code = WaitChild(pid);
    uint64_t pins, aborted;
    if (exit_code == 128 + SIGKILL) {
      ArenaStats after = StatsOf(arena);  // locks: rolls the dead child's section back
      if (one_section && !prepare && Shape(after) != Shape(before)) {
        testing::ReportFailure(__FILE__, __LINE__,
                               std::string(name) + ": state changed by a killed operation, n=" +
                                   std::to_string(n));
        return;
      }
      CHECK(ArenaValid(arena));
      CHECK_EQ(arena->ReleasePinsOf(pid, &pins, &aborted), kOk);
      if (Shape(StatsOf(arena)) != Shape(before)) {
        testing::ReportFailure(__FILE__, __LINE__,
                               std::string(name) + ": state not restored after release_pins_of, n=" +
                                   std::to_string(n));
        return;
      }
      CHECK(ArenaValid(arena));
      continue;
    }
    CHECK_EQ(exit_code, 0);
    CHECK_EQ(arena->ReleasePinsOf(pid, &pins, &aborted), kOk);
    CHECK(ArenaValid(arena));
    std::fprintf(stderr, "  %s: killed after each of its %u writes, rolled back each time\n",
                 name, n - 1);
    return;
  }
  testing::ReportFailure(__FILE__, __LINE__, std::string(name) + ": never completed");
}

TEST(arena_rolls_back_an_operation_killed_at_any_write) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 8 << 20);
  CHECK(arena != nullptr);
  Arena* shared = arena.get();
  // Neighbours on both sides so that frees coalesce and allocations split.
  for (uint64_t i = 1; i <= 6; i++) CHECK_EQ(Put(shared, i, 3000), kOk);
  bool deferred;
  CHECK_EQ(shared->Delete(MakeId(2), &deferred), kOk);
  CHECK_EQ(shared->Delete(MakeId(4), &deferred), kOk);
  uint64_t offset, size;

  // The surviving child's unsealed object is aborted by release_pins_of.
  KillAtEveryWrite("create", shared, file.path, nullptr, true, [](Arena* a) {
    uint64_t offset;
    return a->CreateObject(MakeId(100), 1000, &offset);
  });
  CHECK_EQ(StatsOf(shared).num_objects, 4u);
  KillAtEveryWrite("create+seal", shared, file.path, nullptr, false,
                   [](Arena* a) { return Put(a, 101, 2500); });
  KillAtEveryWrite("delete with coalescing", shared, file.path, nullptr, true, [](Arena* a) {
    bool deferred;
    return a->Delete(MakeId(3), &deferred);
  });
  KillAtEveryWrite("get", shared, file.path, nullptr, true, [](Arena* a) {
    uint64_t offset, size;
    return a->Get(MakeId(5), &offset, &size);
  });
  // Release of the last pin of a delete-pending object (frees it).
  CHECK_EQ(shared->Get(MakeId(6), &offset, &size), kOk);
  CHECK_EQ(shared->Delete(MakeId(6), &deferred), kOk);
  CHECK_EQ(shared->Release(MakeId(6)), kOk);
  CHECK_EQ(StatsOf(shared).num_objects, 3u);  // 1, 5, 101
  KillAtEveryWrite(
      "release", shared, file.path,
      [](Arena* a) {
        uint64_t offset, size;
        CHILD_CHECK(a->Get(MakeId(5), &offset, &size) == kOk);
      },
      true, [](Arena* a) { return a->Release(MakeId(5)); });
  CHECK(ArenaValid(shared));
  ArenaStats stats = StatsOf(shared);
  CHECK_EQ(stats.num_objects, 3u);
  CHECK_EQ(stats.num_pinned, 0u);
  CHECK_EQ(stats.num_processes, 1u);
  CHECK(stats.recoveries > 20u);
}

TEST(arena_release_pins_of_survives_its_own_caller_being_killed) {
  ShmPath file;
  std::unique_ptr<Arena> arena = MakeArena(file.path, 8 << 20);
  CHECK(arena != nullptr);
  for (uint64_t i = 1; i <= 4; i++) CHECK_EQ(Put(arena.get(), i, 2000), kOk);
  bool deferred;
  pid_t dead = fork();
  if (dead == 0) {
    std::unique_ptr<Arena> mine = AttachArena(file.path);
    uint64_t offset, size;
    for (uint64_t i = 1; i <= 3; i++) CHILD_CHECK(mine->Get(MakeId(i), &offset, &size) == kOk);
    CHILD_CHECK(mine->CreateObject(MakeId(9), 700, &offset) == kOk);
    raise(SIGKILL);
  }
  CHECK_EQ(WaitChild(dead), 128 + SIGKILL);
  CHECK_EQ(arena->Delete(MakeId(2), &deferred), kOk);
  CHECK(deferred);
  // A cleaner that is itself killed at its n-th write, for every n: the work
  // it committed stays, the rest is rolled back, and the next one finishes.
  uint32_t n = 1;
  for (; n < 1000; n++) {
    pid_t cleaner = fork();
    if (cleaner == 0) {
      std::unique_ptr<Arena> mine = AttachArena(file.path);
      uint64_t pins, aborted;
      mine->DebugCrashAfterWrites(n);
      CHILD_CHECK(mine->ReleasePinsOf(dead, &pins, &aborted) == kOk);
      mine->DebugCrashAfterWrites(0);
      mine.reset();
      _exit(0);
    }
    int code = WaitChild(cleaner);
    uint64_t pins, aborted;
    CHECK_EQ(arena->ReleasePinsOf(cleaner, &pins, &aborted), kOk);
    CHECK(ArenaValid(arena.get()));
    if (code == 0) break;
    CHECK_EQ(code, 128 + SIGKILL);
  }
  CHECK(n > 10);
  ArenaStats stats = StatsOf(arena.get());
  CHECK_EQ(stats.num_processes, 1u);
  CHECK_EQ(stats.num_pinned, 0u);
  CHECK_EQ(stats.num_objects, 3u);  // 2 freed when its last pin went, 9 aborted
  CHECK_EQ(stats.pins, stats.releases);
  CHECK_EQ(stats.allocations - stats.frees, 3u);
}

int main(int argc, char** argv) { return testing::RunAllTests(argc, argv); }
