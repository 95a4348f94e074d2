// status.cc -- English descriptions of the arena's result codes (see status.h).
#include "status.h"

namespace rayx {

const char* StatusMessage(Status status) {
  switch (status) {
    case kOk: return "ok";
    case kObjectExists: return "object already exists";
    case kOutOfMemory: return "not enough free memory in the arena";
    case kTableFull: return "the object table is full";
    case kObjectNotFound: return "object not found";
    case kObjectNotSealed: return "object is not sealed";
    case kObjectAlreadySealed: return "object is already sealed";
    case kNotPinned: return "object is not pinned by this process";
    case kPinTableFull: return "the pin table is full";
    case kProcessTableFull: return "the process table is full";
    case kInvalidArgument: return "invalid argument";
    case kSystemError: return "system call failed";
    case kBadSegment: return "not a rayx arena (bad magic, version or size)";
    case kLockNotRecoverable: return "the arena lock is not recoverable";
    case kCorrupted: return "arena metadata is inconsistent";
  }
  return "unknown status";
}

}  // namespace rayx
