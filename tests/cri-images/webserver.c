/* berth's stand-in for the nginx and httpd images critest runs: a tiny HTTP
 * server answering 200 to every request. Named after the program it stands
 * in for (the file is installed as /usr/sbin/nginx or /usr/local/bin/httpd):
 * it re-executes itself as "<name>: master process ..." as nginx titles
 * itself, writes its pid to /var/run/<name>.pid, logs "<name>: listening on
 * port N" and serves $STANDIN_PORT (default 80) until SIGTERM, SIGINT or
 * SIGQUIT. Compiled with `gcc -static` by the tests. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static void quit(int sig) {
	(void)sig;
	_exit(0);
}

static const char *base_name(const char *path) {
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

int main(int argc, char **argv) {
	(void)argc;
	char name[64];
	const char *title = strstr(argv[0], ": master process");
	if (title == NULL) {
		/* First start: become "<name>: master process <path> ...". */
		snprintf(name, sizeof name, "%s", base_name(argv[0]));
		char proc_title[256];
		snprintf(proc_title, sizeof proc_title,
			 "%s: master process %s -g daemon off;", name, argv[0]);
		char *args[] = {proc_title, NULL};
		/* Exec the file by its own name, so the process is still called
		 * <name> (what pidof matches). */
		char self[256];
		ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
		if (len > 0) {
			self[len] = 0;
			execv(self, args);
		}
		/* No /proc: serve with the plain command line. */
	} else {
		size_t n = (size_t)(title - argv[0]);
		if (n >= sizeof name) {
			n = sizeof name - 1;
		}
		memcpy(name, argv[0], n);
		name[n] = 0;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = quit;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	const char *port_env = getenv("STANDIN_PORT");
	int port = port_env ? atoi(port_env) : 80;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in addr;
	memset(&addr, 0, sizeof addr);
	addr.sin_family = AF_INET;
	addr.sin_port = htons((unsigned short)port);
	addr.sin_addr.s_addr = htonl(INADDR_ANY);
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 64) != 0) {
		perror("bind/listen");
		return 1;
	}
	char pid_path[128];
	snprintf(pid_path, sizeof pid_path, "/var/run/%s.pid", name);
	FILE *pid_file = fopen(pid_path, "w");
	if (pid_file != NULL) {
		fprintf(pid_file, "%d\n", (int)getpid());
		fclose(pid_file);
	}
	printf("%s: listening on port %d\n", name, port);
	fflush(stdout);

	char body[256];
	int body_len = snprintf(body, sizeof body,
				"<html><body><h1>Welcome to %s (berth stand-in)</h1></body></html>\n", name);
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c < 0) {
			continue;
		}
		/* A client that never sends must not stall the server. */
		struct timeval tv = {5, 0};
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		char req[4096];
		size_t got = 0;
		while (got < sizeof req - 1) {
			ssize_t r = read(c, req + got, sizeof req - 1 - got);
			if (r <= 0) {
				break;
			}
			got += (size_t)r;
			req[got] = 0;
			if (strstr(req, "\r\n\r\n") != NULL) {
				break;
			}
		}
		char head[256];
		int head_len = snprintf(head, sizeof head,
					"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
					"Content-Length: %d\r\nConnection: close\r\n\r\n",
					body_len);
		if (write(c, head, (size_t)head_len) == head_len) {
			(void)!write(c, body, (size_t)body_len);
		}
		close(c);
	}
}
