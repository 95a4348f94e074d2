// robust_mutex.cc -- process-shared robust mutex helpers (see robust_mutex.h).
#include "robust_mutex.h"

#include <errno.h>

namespace rayx {

Status InitRobustMutex(pthread_mutex_t* mutex) {
  pthread_mutexattr_t attributes;
  int rc = pthread_mutexattr_init(&attributes);
  if (rc == 0) rc = pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  if (rc == 0) rc = pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  if (rc == 0) rc = pthread_mutex_init(mutex, &attributes);
  pthread_mutexattr_destroy(&attributes);
  if (rc != 0) {
    errno = rc;
    return kSystemError;
  }
  return kOk;
}

namespace {

// The outcome of pthread_mutex_lock / _trylock (rc) for a robust mutex.
Status LockResult(int rc, LockOutcome* outcome) {
  if (rc == 0) {
    *outcome = LockOutcome::kAcquired;
    return kOk;
  }
  if (rc == EOWNERDEAD) {
    *outcome = LockOutcome::kAcquiredOwnerDied;
    return kOk;
  }
  errno = rc;
  return rc == ENOTRECOVERABLE ? kLockNotRecoverable : kSystemError;
}

}  // namespace

Status LockRobustMutex(pthread_mutex_t* mutex, LockOutcome* outcome) {
  return LockResult(pthread_mutex_lock(mutex), outcome);
}

Status TryLockRobustMutex(pthread_mutex_t* mutex, LockOutcome* outcome, bool* acquired) {
  int rc = pthread_mutex_trylock(mutex);
  *acquired = false;
  if (rc == EBUSY) return kOk;
  Status status = LockResult(rc, outcome);
  *acquired = status == kOk;
  return status;
}

Status MarkConsistent(pthread_mutex_t* mutex) {
  int rc = pthread_mutex_consistent(mutex);
  if (rc != 0) {
    errno = rc;
    return kSystemError;
  }
  return kOk;
}

void UnlockRobustMutex(pthread_mutex_t* mutex) { pthread_mutex_unlock(mutex); }

}  // namespace rayx
