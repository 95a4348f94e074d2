// robust_mutex.h -- a process-shared, robust pthread mutex placed in shared
// memory.
//
// All processes of a node lock the same mutex inside the arena's segment.
// PTHREAD_PROCESS_SHARED lets it work across address spaces; PTHREAD_MUTEX_ROBUST
// makes the kernel hand the lock to the next waiter when its owner dies, with
// EOWNERDEAD instead of leaving everyone blocked forever. The caller then
// repairs the protected state (the arena rolls its journal back) and calls
// MarkConsistent() before unlocking; otherwise the mutex becomes unusable.
#ifndef RAYX_ROBUST_MUTEX_H_
#define RAYX_ROBUST_MUTEX_H_

#include <pthread.h>

#include "status.h"

namespace rayx {

// Initialises `mutex` (in shared memory) as process-shared and robust.
// Fails with kSystemError (errno set) if the attributes are unsupported.
Status InitRobustMutex(pthread_mutex_t* mutex);

enum class LockOutcome {
  kAcquired,         // normal case
  kAcquiredOwnerDied // the previous owner died holding it: repair, then MarkConsistent
};

// Blocks until the mutex is held. Fails with kLockNotRecoverable if an earlier
// recoverer unlocked without marking it consistent, kSystemError otherwise.
Status LockRobustMutex(pthread_mutex_t* mutex, LockOutcome* outcome);

// Takes the mutex only if no one holds it: *acquired says whether it did (and
// *outcome is then set as by LockRobustMutex). Fails as LockRobustMutex does.
Status TryLockRobustMutex(pthread_mutex_t* mutex, LockOutcome* outcome, bool* acquired);

// Declares the protected state repaired after kAcquiredOwnerDied.
Status MarkConsistent(pthread_mutex_t* mutex);

void UnlockRobustMutex(pthread_mutex_t* mutex);

}  // namespace rayx

#endif  // RAYX_ROBUST_MUTEX_H_
