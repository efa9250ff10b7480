/* Minimal Cortex-M startup: vector table, .data/.bss setup, FPU enable,
   and ARM semihosting (the debugger-call interface QEMU implements) for
   output and the exit status. */
#include <stdint.h>
#include "firmware.h"

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_top[];
int main(void);

int kiln_semihost(int op, const void *arg) {
  register int r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

/* SYS_EXIT_EXTENDED: QEMU exits with `code` as its own status. */
void kiln_exit(int code) {
  uint32_t block[2];
  block[0] = 0x20026u; /* ADP_Stopped_ApplicationExit */
  block[1] = (uint32_t)code;
  kiln_semihost(0x20, block);
  for (;;) {
  }
}

void kiln_puts(const char *s) { kiln_semihost(0x04, s); /* SYS_WRITE0 */ }

static void fault_handler(void) {
  kiln_puts("kiln-fw: fault\n");
  kiln_exit(70);
}

void Reset_Handler(void) {
  uint32_t *s, *d;
#if defined(__ARM_FP)
  /* Grant full access to CP10/CP11 (the FPU) before any float instruction. */
  *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
  __asm__ volatile("dsb\n isb" ::: "memory");
#endif
  for (s = __data_load, d = __data_start; d < __data_end;) *d++ = *s++;
  for (d = __bss_start; d < __bss_end;) *d++ = 0;
  kiln_exit(main());
}

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))__stack_top, Reset_Handler, fault_handler, fault_handler,
    fault_handler, fault_handler, fault_handler, 0, 0, 0, 0,
    fault_handler, fault_handler, 0, fault_handler, fault_handler,
};
