#ifndef KILN_FIRMWARE_H
#define KILN_FIRMWARE_H
int kiln_semihost(int op, const void *arg);
void kiln_exit(int code);
void kiln_puts(const char *s);
#endif
