// allocator.h -- the block allocator of the arena's heap: boundary tags,
// segregated free lists, immediate coalescing, all state inside the segment.
//
// The heap is a run of blocks that tile [begin, end) of the shared segment.
// Each block starts with a 64-byte header (its size, the size of the block
// just before it, free-list links, an owner tag), followed by the payload, so
// every payload is 64-byte aligned and every block size a multiple of 64.
// "prev_size" is the boundary tag: from any block we can reach both physical
// neighbours, which is what freeing needs to merge a block with free
// neighbours at once. Two free blocks are therefore never adjacent.
//
// Free blocks sit in one of kNumBins doubly linked lists by size class
// (bin i holds sizes in [64 << i, 64 << (i + 1))). Allocation searches the
// request's own bin first-fit, then takes the head of the first non-empty
// larger bin (found with a bitmap), where any block fits; the rest of the block
// is split off and filed again when it is big enough to be a block. The links
// live in the header, not the payload, so freed pages are never touched.
//
// Everything is addressed by offsets from the segment base (each process maps
// the segment at its own address) and every metadata write goes through the
// Journal, so a locked section can be rolled back (see journal.h). The
// allocator is not thread-safe: the arena calls it under its mutex.
#ifndef RAYX_ALLOCATOR_H_
#define RAYX_ALLOCATOR_H_

#include <cstdint>
#include <string>

#include "journal.h"
#include "status.h"

namespace rayx {

constexpr uint64_t kAlignment = 64;          // payload alignment
constexpr uint64_t kBlockHeaderSize = 64;    // header before each payload
constexpr uint64_t kMinBlockSize = 128;      // header + 64 bytes of payload
constexpr int kNumBins = 48;                 // 64 << 47 bytes = 8 PiB
constexpr uint32_t kNoOwner = 0xFFFFFFFFu;
constexpr uint32_t kBlockMagic = 0xB10C4A7Eu;

struct BlockHeader {            // 64 bytes at the start of every block
  uint64_t size;                // whole block, header included; multiple of 64
  uint64_t prev_size;           // size of the block just before; 0 for the first
  uint64_t next_free;           // bin list links when free (0 = none)
  uint64_t prev_free;
  uint32_t magic;               // kBlockMagic
  uint32_t is_free;             // 1 when in a bin
  uint32_t owner;               // object table slot owning it, or kNoOwner
  uint32_t reserved[5];
};
static_assert(sizeof(BlockHeader) == kBlockHeaderSize, "block header is 64 bytes");

struct HeapState {              // the allocator's state, inside the segment
  uint64_t begin;               // first block (segment offset, 64-aligned)
  uint64_t end;                 // one past the last block
  uint64_t bytes_allocated;     // sum of allocated block sizes
  uint64_t bytes_free;          // sum of free block sizes; allocated + free == end - begin
  uint64_t allocated_blocks;    // number of allocated blocks
  uint64_t free_blocks;         // number of free blocks
  uint64_t nonempty_bins;       // bit i set iff bins[i] is not empty
  uint64_t bins[kNumBins];      // head of each bin's list (0 = empty)
  uint64_t allocations;         // counters of successful allocate / free calls
  uint64_t frees;
};

struct HeapStats {
  uint64_t heap_size;           // end - begin
  uint64_t bytes_allocated;
  uint64_t bytes_free;
  uint64_t allocated_blocks;
  uint64_t free_blocks;
  uint64_t largest_free_payload;  // biggest payload one allocate() can return now
  uint64_t allocations;
  uint64_t frees;
};

class Allocator {
 public:
  // `base` is where this process mapped the segment; `state` lives in it.
  Allocator(uint8_t* base, HeapState* state, Journal* journal)
      : base_(base), state_(state), journal_(journal) {}

  // Lays one free block over [begin, end) (offsets, 64-aligned, at least
  // kMinBlockSize apart). Writes directly, without the journal: only for a
  // segment no other process can see yet. Fails with kInvalidArgument.
  static Status Format(uint8_t* base, HeapState* state, uint64_t begin, uint64_t end);

  // Block size (header included) that a payload of `payload_size` needs.
  static uint64_t BlockSizeFor(uint64_t payload_size);

  // Allocates a block with room for `payload_size` bytes, tags it with `owner`
  // and stores the payload's segment offset (64-aligned) in *payload_offset.
  // Fails with kOutOfMemory, changing nothing, if no free block is big enough.
  Status Allocate(uint64_t payload_size, uint32_t owner, uint64_t* payload_offset);

  // Frees the block whose payload starts at `payload_offset` and merges it with
  // free neighbours. Fails with kInvalidArgument, changing nothing, if the
  // offset is not the payload of an allocated block.
  Status Free(uint64_t payload_offset);

  // The owner tag of the allocated block at `payload_offset`, or kNoOwner.
  uint32_t OwnerOf(uint64_t payload_offset) const;

  HeapStats Stats() const;

  // Walks every block and every bin and checks the accounting: tiling,
  // boundary tags, no adjacent free blocks, bins hold exactly the free blocks,
  // sums and counts match. On failure returns false and says why in *error.
  bool Validate(std::string* error) const;

 private:
  BlockHeader* HeaderAt(uint64_t offset) const {
    return reinterpret_cast<BlockHeader*>(base_ + offset);
  }
  void InsertFree(uint64_t offset);
  void UnlinkFree(uint64_t offset);
  void SetPrevSizeOfNext(uint64_t offset, uint64_t size);

  uint8_t* base_;
  HeapState* state_;
  Journal* journal_;
};

// Bin of a block of `block_size` bytes.
int BinOf(uint64_t block_size);

}  // namespace rayx

#endif  // RAYX_ALLOCATOR_H_
