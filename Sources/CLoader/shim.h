// The dynamic loader's view of the loaded objects (`dl_iterate_phdr`, `struct dl_phdr_info`) and the ELF program
// header constants, for `LoadedCode` (Sources/Shared/Process/LoadedCode.swift). link.h declares them only under
// _GNU_SOURCE, which Swift's Glibc module is not built with. Nothing to link: they are in libc.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <elf.h>
#include <link.h>
#include <sys/auxv.h>
#include <sys/mman.h>
