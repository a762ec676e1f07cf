{
  "targets": [
    {
      "target_name": "minidalle_native",
      "sources": ["minidalle_native.c"],
      "cflags": ["-O3", "-ffast-math", "-std=gnu17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lopenblas", "-lmvec", "-lm"]
    }
  ]
}
