{
  "targets": [
    {
      "target_name": "node_mend",
      "sources": [
        "native/threadpool.cc",
        "native/safetensors.cc",
        "native/gpt2.cc",
        "native/overlay.cc",
        "native/mend.cc",
        "native/mend_train.cc",
        "native/kernels/cpu/gemm.cc",
        "native/kernels/cpu/encoder.cc",
        "native/kernels/cpu/layernorm.cc",
        "native/kernels/cpu/gelu.cc",
        "native/kernels/cpu/bias.cc",
        "native/kernels/cpu/attention.cc",
        "native/kernels/cpu/crossentropy.cc",
        "native/kernels/cpu/adam.cc",
        "native/addon/addon.cc",
        "native/addon/model_binding.cc",
        "native/addon/mend_binding.cc",
        "native/addon/train_binding.cc",
        "native/addon/safetensors_binding.cc",
        "native/addon/testing_binding.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions"],
      "xcode_settings": { "GCC_ENABLE_CPP_EXCEPTIONS": "YES", "CLANG_CXX_LANGUAGE_STANDARD": "c++17" },
      "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1 } }
    }
  ]
}
