/*
 * Real-mode entry for application processors.
 *
 * The BSP copies [ap_trampoline_start, ap_trampoline_end) to physical
 * TRAMPOLINE_PHYS (0x8000) and starts an AP there with a SIPI (vector 0x08,
 * so CS = 0x0800, IP = 0). The code goes straight from real mode to long
 * mode (PAE + LME + PE|PG in one CR0 write) on a temporary PML4 below 4 GiB
 * whose upper half is a copy of the kernel's, then calls the Rust entry
 * with the AP's stack and argument from the data block at the end.
 *
 * Every address is written as TR_BASE + label - ap_trampoline_start: the
 * code runs at its copy, not where the linker put it.
 */
.set TR_BASE, 0x8000

.pushsection .text.ap_trampoline, "ax"
.global ap_trampoline_start
.global ap_trampoline_end
.global ap_tr_pml4
.global ap_tr_claim
.global ap_tr_stack
.global ap_tr_entry
.global ap_tr_arg

.code16
ap_trampoline_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds

    /* Only one AP may use the data block: a late AP from an earlier,
       abandoned start must not take the stack of the current one. */
    movl $1, %eax
    lock xchgl %eax, TR_BASE + ap_tr_claim - ap_trampoline_start
    testl %eax, %eax
    jnz park

    movl %cr4, %eax
    orl $0x20, %eax                 /* PAE */
    movl %eax, %cr4
    movl TR_BASE + ap_tr_pml4 - ap_trampoline_start, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx          /* IA32_EFER */
    rdmsr
    orl $0x900, %eax                /* LME | NXE (kernel PTEs use NX) */
    wrmsr
    lgdtl TR_BASE + tr_gdt_ptr - ap_trampoline_start
    movl %cr0, %eax
    orl $0x80000001, %eax           /* PG | PE */
    movl %eax, %cr0
    ljmpl $0x08, $(TR_BASE + long_mode - ap_trampoline_start)

park:
    cli
    hlt
    jmp park

.code64
long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq TR_BASE + ap_tr_stack - ap_trampoline_start, %rsp
    movq TR_BASE + ap_tr_arg - ap_trampoline_start, %rdi
    movq TR_BASE + ap_tr_entry - ap_trampoline_start, %rax
    call *%rax                      /* never returns */
    ud2

.balign 8
tr_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF        /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF        /* 0x10: data */
tr_gdt_ptr:
    .word tr_gdt_ptr - tr_gdt - 1
    .long TR_BASE + tr_gdt - ap_trampoline_start

.balign 8
ap_tr_pml4:  .long 0
ap_tr_claim: .long 0
ap_tr_stack: .quad 0
ap_tr_entry: .quad 0
ap_tr_arg:   .quad 0
ap_trampoline_end:
.popsection
