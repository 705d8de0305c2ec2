#include "errors.h"

#include <cstring>

namespace shmch {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "EINVALIDARG";
    case ErrorCode::kChannelFull: return "ECHANNELFULL";
    case ErrorCode::kArenaFull: return "EARENAFULL";
    case ErrorCode::kTableFull: return "ETABLEFULL";
    case ErrorCode::kTooLarge: return "ETOOLARGE";
    case ErrorCode::kVersionMismatch: return "EVERSION";
    case ErrorCode::kCorrupt: return "ECORRUPT";
    case ErrorCode::kPermission: return "EPERMISSION";
    case ErrorCode::kNoSpace: return "ENOSPACE";
    case ErrorCode::kClosed: return "ECLOSED";
    case ErrorCode::kNotFound: return "ENOTFOUND";
    case ErrorCode::kSystem: return "ESYSTEM";
    case ErrorCode::kBusy: return "EBUSY";
  }
  return "EUNKNOWN";
}

void ThrowSystemError(const std::string& what, int err) {
  if (err == ENOSPC || err == ENOMEM) {
    throw Error(ErrorCode::kNoSpace, what + ": " + std::strerror(err));
  }
  if (err == EACCES || err == EPERM) {
    throw Error(ErrorCode::kPermission, what + ": " + std::strerror(err));
  }
  throw Error(ErrorCode::kSystem, what + ": " + std::strerror(err));
}

}  // namespace shmch
