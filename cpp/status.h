// status.h -- the result codes of the shared-memory arena.
//
// Every fallible operation of the arena, its allocator and its lock returns a
// Status instead of throwing or aborting: the arena is driven from Cython,
// where one function (rayx/_core/store.pyx: check_status) turns each code into
// one exception class of rayx/exceptions.py. The enum is unscoped and has fixed
// values so that Cython can declare it as a plain C enum.
#ifndef RAYX_STATUS_H_
#define RAYX_STATUS_H_

namespace rayx {

enum Status : int {
  kOk = 0,
  kObjectExists = 1,          // create(): the id is already in the table
  kOutOfMemory = 2,           // create(): no free block is large enough
  kTableFull = 3,             // create(): every object table slot is taken
  kObjectNotFound = 4,        // no object with this id (or it is being deleted)
  kObjectNotSealed = 5,       // get()/delete() of an object still being written
  kObjectAlreadySealed = 6,   // seal()/abort() of a sealed object
  kNotPinned = 7,             // release() by a process that holds no pin on it
  kPinTableFull = 8,          // get(): every pin record is taken
  kProcessTableFull = 9,      // attach: every process slot is taken
  kInvalidArgument = 10,      // bad size, offset or capacity
  kSystemError = 11,          // a system call failed; errno says why
  kBadSegment = 12,           // the file is not an arena of this version
  kLockNotRecoverable = 13,   // the robust mutex is unusable (should not happen)
  kCorrupted = 14,            // validate() found an inconsistency
};

// A short, constant English description of `status` (never null).
const char* StatusMessage(Status status);

}  // namespace rayx

#endif  // RAYX_STATUS_H_
