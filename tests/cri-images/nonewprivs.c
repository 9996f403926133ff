/* berth's stand-in for registry.k8s.io/e2e-test-images/nonewprivs: a
 * setuid-root program printing its effective uid, so critest sees whether
 * no_new_privs stopped the setuid bit. Compiled with `gcc -static`. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
