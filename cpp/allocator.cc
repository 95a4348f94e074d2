// allocator.cc -- boundary-tag allocator with segregated free lists over the
// arena's heap (design in allocator.h). Every metadata store goes through the
// journal so that the arena can roll a locked section back.
#include "allocator.h"

#include <cstring>
#include <sstream>

namespace rayx {

namespace {

uint64_t RoundUp(uint64_t value, uint64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

}  // namespace

int BinOf(uint64_t block_size) {
  uint64_t units = block_size / kAlignment;  // >= 2 for any real block
  int bin = 63 - __builtin_clzll(units | 1);
  return bin < kNumBins ? bin : kNumBins - 1;
}

uint64_t Allocator::BlockSizeFor(uint64_t payload_size) {
  uint64_t size = RoundUp(payload_size + kBlockHeaderSize, kAlignment);
  return size < kMinBlockSize ? kMinBlockSize : size;
}

Status Allocator::Format(uint8_t* base, HeapState* state, uint64_t begin, uint64_t end) {
  if (begin % kAlignment != 0 || end % kAlignment != 0 || end < begin + kMinBlockSize) {
    return kInvalidArgument;
  }
  std::memset(state, 0, sizeof(*state));
  state->begin = begin;
  state->end = end;
  BlockHeader* header = reinterpret_cast<BlockHeader*>(base + begin);
  std::memset(header, 0, sizeof(*header));
  header->size = end - begin;
  header->magic = kBlockMagic;
  header->is_free = 1;
  header->owner = kNoOwner;
  int bin = BinOf(header->size);
  state->bins[bin] = begin;
  state->nonempty_bins = uint64_t{1} << bin;
  state->bytes_free = header->size;
  state->free_blocks = 1;
  return kOk;
}

void Allocator::InsertFree(uint64_t offset) {
  BlockHeader* block = HeaderAt(offset);
  int bin = BinOf(block->size);
  uint64_t head = state_->bins[bin];
  journal_->Set(block->next_free, head);
  journal_->Set(block->prev_free, uint64_t{0});
  journal_->Set(block->is_free, uint32_t{1});
  journal_->Set(block->owner, kNoOwner);
  if (head != 0) journal_->Set(HeaderAt(head)->prev_free, offset);
  journal_->Set(state_->bins[bin], offset);
  journal_->Set(state_->nonempty_bins, state_->nonempty_bins | (uint64_t{1} << bin));
  journal_->Set(state_->bytes_free, state_->bytes_free + block->size);
  journal_->Set(state_->free_blocks, state_->free_blocks + 1);
}

void Allocator::UnlinkFree(uint64_t offset) {
  BlockHeader* block = HeaderAt(offset);
  int bin = BinOf(block->size);
  uint64_t next = block->next_free;
  uint64_t prev = block->prev_free;
  if (prev != 0) {
    journal_->Set(HeaderAt(prev)->next_free, next);
  } else {
    journal_->Set(state_->bins[bin], next);
    if (next == 0) {
      journal_->Set(state_->nonempty_bins, state_->nonempty_bins & ~(uint64_t{1} << bin));
    }
  }
  if (next != 0) journal_->Set(HeaderAt(next)->prev_free, prev);
  journal_->Set(block->is_free, uint32_t{0});
  journal_->Set(state_->bytes_free, state_->bytes_free - block->size);
  journal_->Set(state_->free_blocks, state_->free_blocks - 1);
}

void Allocator::SetPrevSizeOfNext(uint64_t offset, uint64_t size) {
  uint64_t next = offset + size;
  if (next < state_->end) journal_->Set(HeaderAt(next)->prev_size, size);
}

Status Allocator::Allocate(uint64_t payload_size, uint32_t owner, uint64_t* payload_offset) {
  if (payload_size > state_->end - state_->begin) return kOutOfMemory;
  uint64_t needed = BlockSizeFor(payload_size);
  int bin = BinOf(needed);

  // First fit inside the request's own bin, where blocks may be too small...
  uint64_t found = 0;
  for (uint64_t offset = state_->bins[bin]; offset != 0; offset = HeaderAt(offset)->next_free) {
    if (HeaderAt(offset)->size >= needed) {
      found = offset;
      break;
    }
  }
  // ...else the head of the first larger non-empty bin, where every block fits.
  if (found == 0 && bin + 1 < kNumBins) {
    uint64_t larger = state_->nonempty_bins & ~((uint64_t{2} << bin) - 1);
    if (larger != 0) found = state_->bins[__builtin_ctzll(larger)];
  }
  if (found == 0) return kOutOfMemory;

  BlockHeader* block = HeaderAt(found);
  UnlinkFree(found);
  uint64_t size = block->size;
  uint64_t remainder = size - needed;
  if (remainder >= kMinBlockSize) {
    uint64_t rest_offset = found + needed;
    BlockHeader rest;
    std::memset(&rest, 0, sizeof(rest));
    rest.size = remainder;
    rest.prev_size = needed;
    rest.magic = kBlockMagic;
    rest.owner = kNoOwner;
    journal_->Write(HeaderAt(rest_offset), &rest, sizeof(rest));
    SetPrevSizeOfNext(rest_offset, remainder);
    journal_->Set(block->size, needed);
    InsertFree(rest_offset);
    size = needed;
  }
  journal_->Set(block->owner, owner);
  journal_->Set(state_->bytes_allocated, state_->bytes_allocated + size);
  journal_->Set(state_->allocated_blocks, state_->allocated_blocks + 1);
  journal_->Set(state_->allocations, state_->allocations + 1);
  *payload_offset = found + kBlockHeaderSize;
  return kOk;
}

Status Allocator::Free(uint64_t payload_offset) {
  if (payload_offset < state_->begin + kBlockHeaderSize || payload_offset >= state_->end ||
      payload_offset % kAlignment != 0) {
    return kInvalidArgument;
  }
  uint64_t offset = payload_offset - kBlockHeaderSize;
  BlockHeader* block = HeaderAt(offset);
  if (block->magic != kBlockMagic || block->is_free) return kInvalidArgument;

  uint64_t size = block->size;
  journal_->Set(state_->bytes_allocated, state_->bytes_allocated - size);
  journal_->Set(state_->allocated_blocks, state_->allocated_blocks - 1);
  journal_->Set(state_->frees, state_->frees + 1);

  uint64_t next = offset + size;
  if (next < state_->end && HeaderAt(next)->is_free) {
    size += HeaderAt(next)->size;
    UnlinkFree(next);
  }
  if (block->prev_size != 0) {
    uint64_t prev = offset - block->prev_size;
    if (HeaderAt(prev)->is_free) {
      size += HeaderAt(prev)->size;
      UnlinkFree(prev);
      offset = prev;
    }
  }
  journal_->Set(HeaderAt(offset)->size, size);
  SetPrevSizeOfNext(offset, size);
  InsertFree(offset);
  return kOk;
}

uint32_t Allocator::OwnerOf(uint64_t payload_offset) const {
  if (payload_offset < state_->begin + kBlockHeaderSize || payload_offset >= state_->end) {
    return kNoOwner;
  }
  const BlockHeader* block = HeaderAt(payload_offset - kBlockHeaderSize);
  if (block->magic != kBlockMagic || block->is_free) return kNoOwner;
  return block->owner;
}

HeapStats Allocator::Stats() const {
  HeapStats stats;
  stats.heap_size = state_->end - state_->begin;
  stats.bytes_allocated = state_->bytes_allocated;
  stats.bytes_free = state_->bytes_free;
  stats.allocated_blocks = state_->allocated_blocks;
  stats.free_blocks = state_->free_blocks;
  stats.allocations = state_->allocations;
  stats.frees = state_->frees;
  stats.largest_free_payload = 0;
  if (state_->nonempty_bins != 0) {
    int top = 63 - __builtin_clzll(state_->nonempty_bins);
    uint64_t largest = 0;
    for (uint64_t offset = state_->bins[top]; offset != 0; offset = HeaderAt(offset)->next_free) {
      if (HeaderAt(offset)->size > largest) largest = HeaderAt(offset)->size;
    }
    stats.largest_free_payload = largest - kBlockHeaderSize;
  }
  return stats;
}

bool Allocator::Validate(std::string* error) const {
  std::ostringstream why;
  uint64_t allocated = 0, free_bytes = 0, allocated_blocks = 0, free_blocks = 0;
  uint64_t previous_size = 0;
  bool previous_free = false;
  uint64_t offset = state_->begin;
  while (offset < state_->end) {
    const BlockHeader* block = HeaderAt(offset);
    if (block->magic != kBlockMagic) {
      why << "block at " << offset << ": bad magic";
    } else if (block->size < kMinBlockSize || block->size % kAlignment != 0 ||
               block->size > state_->end - offset) {
      why << "block at " << offset << ": bad size " << block->size;
    } else if (block->prev_size != previous_size) {
      why << "block at " << offset << ": prev_size " << block->prev_size << " but previous block is "
          << previous_size;
    } else if (block->is_free && previous_free) {
      why << "block at " << offset << ": two adjacent free blocks (missed coalescing)";
    }
    if (!why.str().empty()) break;
    if (block->is_free) {
      free_bytes += block->size;
      free_blocks++;
    } else {
      allocated += block->size;
      allocated_blocks++;
    }
    previous_free = block->is_free != 0;
    previous_size = block->size;
    offset += block->size;
  }
  if (why.str().empty() && offset != state_->end) why << "blocks overrun the heap end";
  if (why.str().empty()) {
    if (allocated != state_->bytes_allocated || free_bytes != state_->bytes_free ||
        allocated_blocks != state_->allocated_blocks || free_blocks != state_->free_blocks) {
      why << "accounting: walked " << allocated << " allocated bytes in " << allocated_blocks
          << " blocks and " << free_bytes << " free bytes in " << free_blocks
          << " blocks; recorded " << state_->bytes_allocated << "/" << state_->allocated_blocks
          << " and " << state_->bytes_free << "/" << state_->free_blocks;
    } else if (allocated + free_bytes != state_->end - state_->begin) {
      why << "accounting: allocated + free != heap size";
    }
  }
  if (why.str().empty()) {
    uint64_t listed = 0;
    for (int bin = 0; bin < kNumBins && why.str().empty(); bin++) {
      bool nonempty = (state_->nonempty_bins >> bin) & 1;
      if (nonempty != (state_->bins[bin] != 0)) {
        why << "bin " << bin << ": bitmap disagrees with list head";
        break;
      }
      uint64_t prev = 0;
      for (uint64_t member = state_->bins[bin]; member != 0; member = HeaderAt(member)->next_free) {
        const BlockHeader* block = HeaderAt(member);
        if (member < state_->begin || member >= state_->end || block->magic != kBlockMagic ||
            !block->is_free || BinOf(block->size) != bin || block->prev_free != prev ||
            ++listed > free_blocks) {
          why << "bin " << bin << ": bad member at " << member;
          break;
        }
        prev = member;
      }
    }
    if (why.str().empty() && listed != free_blocks) {
      why << "bins list " << listed << " blocks but " << free_blocks << " are free";
    }
  }
  if (why.str().empty()) return true;
  if (error != nullptr) *error = why.str();
  return false;
}

}  // namespace rayx
