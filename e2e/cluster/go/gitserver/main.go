// gitserver serves the git repositories under -root over smart HTTP on loopback, through git's own CGI
// program (git http-backend), behind HTTP basic auth: the git server of the write-back tests. Flux's
// GitRepository accepts only http(s) and ssh URLs, so git daemon would not do.
//
// One test switch: an executable file named before-push in a bare repository runs once (then is removed)
// just before the server advertises the refs of a push, in the repository's directory. A test puts a
// commit there to make someone else's push land between Serin's fetch and its push, deterministically.
package main

import (
	"crypto/subtle"
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on")
	root := flag.String("root", "", "directory holding the bare repositories (<name>.git)")
	user := flag.String("user", "git", "the one user allowed")
	passwordFile := flag.String("password-file", "", "file holding that user's password (never an argument)")
	addrFile := flag.String("addr-file", "", "where to write the address listened on")
	flag.Parse()
	if *root == "" || *passwordFile == "" {
		log.Fatal("-root and -password-file are required")
	}
	raw, err := os.ReadFile(*passwordFile)
	if err != nil {
		log.Fatal(err)
	}
	password := strings.TrimSpace(string(raw))
	backend, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		log.Fatalf("git --exec-path: %v", err)
	}
	cgiHandler := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(backend)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + *root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	var switches sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(*user)) != 1 ||
			subtle.ConstantTimeCompare([]byte(p), []byte(password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="serin-test-git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			log.Printf("%s %s: 401", r.Method, r.URL.Path)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/info/refs") && r.URL.Query().Get("service") == "git-receive-pack" {
			repo := filepath.Join(*root, filepath.Clean("/"+strings.TrimSuffix(r.URL.Path, "/info/refs")))
			switches.Lock()
			hook := filepath.Join(repo, "before-push")
			if _, err := os.Stat(hook); err == nil {
				cmd := exec.Command(hook)
				cmd.Dir = repo
				out, err := cmd.CombinedOutput()
				os.Remove(hook)
				log.Printf("ran %s: %v %s", hook, err, out)
			}
			switches.Unlock()
		}
		// REMOTE_USER lets http-backend accept pushes (receive-pack is off for anonymous users).
		h := *cgiHandler
		h.Env = append(append([]string{}, h.Env...), "REMOTE_USER="+u)
		h.ServeHTTP(w, r)
	})
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(l.Addr().String()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("serving %s on http://%s", *root, l.Addr())
	log.Fatal(http.Serve(l, handler))
}
