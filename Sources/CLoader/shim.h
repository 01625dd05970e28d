// The dynamic loader's list of loaded objects, for `LoadedCode` (Sources/Shared/Process/LoadedCode.swift).
//
// glibc declares `dl_iterate_phdr` and `struct dl_phdr_info` only under _GNU_SOURCE, and defining that here would
// give the system headers this module includes other contents than Swift's Glibc module has (a clean build then
// fails on `fd_set`). So the function is declared here under its own name, bound to the symbol with an asm label, and
// takes a struct with the leading fields of `struct dl_phdr_info` (glibc's callback gets the struct's size; these four
// fields are in every version). The ELF constants come from elf.h, which needs no feature macro.
#include <elf.h>
#include <stddef.h>
#include <sys/auxv.h>

struct ferry_loaded_object {
    Elf64_Addr address;
    const char *name;
    const Elf64_Phdr *headers;
    Elf64_Half headerCount;
};

typedef int (*ferry_loaded_object_visitor)(struct ferry_loaded_object *object, size_t size, void *context);

extern int ferry_iterate_loaded_objects(ferry_loaded_object_visitor visitor, void *context) __asm__("dl_iterate_phdr");
