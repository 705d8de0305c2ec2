{
  "targets": [
    {
      "target_name": "shm_channels",
      "sources": [
        "native/binding/addon.cc",
        "native/core/arena.cc",
        "native/core/checksum.cc",
        "native/core/doorbell.cc",
        "native/core/errors.cc",
        "native/core/fault_points.cc",
        "native/core/groups.cc",
        "native/core/layer.cc",
        "native/core/payload.cc",
        "native/core/queues.cc",
        "native/core/receive_any.cc",
        "native/core/inbox.cc",
        "native/core/recovery.cc",
        "native/core/segment.cc",
        "native/core/shared_lock.cc",
        "native/core/slots.cc",
        "native/core/wakeups.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-fvisibility=hidden", "-O2"],
      "libraries": ["-lpthread", "-lrt"]
    }
  ]
}
