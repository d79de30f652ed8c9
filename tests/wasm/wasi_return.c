// A WASI command whose main returns 0 (no explicit exit call).
#include <stdio.h>
int main(void) {
  puts("done");
  return 0;
}
