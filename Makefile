# evlua - build, test, benchmark, install.
#   make            build ./evlua (installs missing build packages first;
#                   on a machine without make: ./setup installs them)
#   make test       C unit tests + Lua tests inside the runtime
#   make asan-test  the same tests (C and Lua) with an ASan+UBSan build
#   make coverage   the same tests on a gcov build, then gcovr's line and
#                   branch coverage of src/ (HTML: build/cov/index.html)
#   make bench      benchmarks, side by side with their peers
#   make fresh-check  the README's two commands on a new minimal Debian
#   make install PREFIX=/usr/local
# Each target installs the Debian packages it needs, and only those.

PREFIX ?= /usr/local
SHARE_DIR = $(PREFIX)/share/evlua
CC ?= cc
CFLAGS ?= -O2 -g
WARNINGS = -Wall -Wextra -Wshadow -Wpointer-arith -Wcast-qual \
  -Wstrict-prototypes -Wmissing-prototypes -Wundef -Wformat=2
# CI (which sets CI=true) builds with -Werror: a new warning fails the run.
ifeq ($(CI),true)
WARNINGS += -Werror
endif
# src/core/ is plain C: it never sees Lua's headers, so a Lua call there
# fails to compile. src/lua/ is everything that includes lua.h: the
# runtime (runtime.c, alloc.c, main.c) and the bindings (l<name>.c).
# libbson (MongoDB's BSON) and libcrypto (SCRAM's hashes) for evlua.mongo;
# zlib gzips the profiler's pprof output.
CORE_PKGS = libcares libbson-1.0
LUA_PKGS = lua5.4 libcares readline libbson-1.0 libcrypto zlib
PKG_LIBS = $(shell pkg-config --libs $(LUA_PKGS) 2>/dev/null)
# libev and http-parser ship no .pc file in Debian.
LIBS = $(PKG_LIBS) -lev -lhttp_parser -lm
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -D_DEFAULT_SOURCE $(WARNINGS) \
  -DEVLUA_SHARE_DIR='"$(SHARE_DIR)"' $(CFLAGS)
CORE_CFLAGS = $(BASE_CFLAGS) $(shell pkg-config --cflags $(CORE_PKGS) 2>/dev/null) \
  -Isrc/core
LUA_CFLAGS = $(BASE_CFLAGS) $(shell pkg-config --cflags $(LUA_PKGS) 2>/dev/null) \
  -Isrc/core -Isrc/lua
layer_cflags = $(if $(filter src/core/%,$(1)),$(CORE_CFLAGS),$(LUA_CFLAGS))

# Every C file in src/ is part of the runtime; src/lua/main.c holds the
# launcher.
SRC = $(sort $(wildcard src/core/*.c src/lua/*.c))
OBJ = $(SRC:src/%.c=build/obj/%.o)
ASAN_OBJ = $(SRC:src/%.c=build/asan/obj/%.o)
ASAN_FLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=undefined
COV_OBJ = $(SRC:src/%.c=build/cov/obj/%.o)
COV_FLAGS = -O0 -g --coverage

C_TESTS = build/tests/test_log build/tests/test_paths build/tests/test_buffer \
  build/tests/test_msgpack build/tests/test_http build/tests/test_process \
  build/tests/test_resp build/tests/test_stream build/tests/test_net \
  build/tests/test_dns build/tests/test_kcp build/tests/test_udp \
  build/tests/test_kcpnet build/tests/test_mongo

.PHONY: all deps-build deps-test deps-bench deps-coverage test asan asan-test \
  coverage bench fuzz fresh-check lint install uninstall clean
all: deps-build evlua

deps-build deps-test deps-bench deps-coverage:
	@scripts/install-deps.sh $(@:deps-%=%)

# Packages before compilers: under make -j a compile must not race the
# install of its headers, nor one apt-get another.
deps-test deps-bench: | deps-build
deps-coverage: | deps-test
$(OBJ): | deps-build
$(ASAN_OBJ) $(COV_OBJ) $(C_TESTS) $(ASAN_C_TESTS) $(COV_C_TESTS): | deps-test

evlua: $(OBJ)
	$(CC) -o $@ $(OBJ) $(LIBS) $(LDFLAGS)

build/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(call layer_cflags,$<) -MMD -MP -c -o $@ $<

# The sanitizer build lives in build/asan/ with a lua/ link beside it, so
# it finds the library the same way ./evlua does.
asan: deps-test build/asan/evlua
build/asan/evlua: $(ASAN_OBJ)
	clang $(ASAN_FLAGS) -o $@ $(ASAN_OBJ) $(LIBS)
	ln -sfn ../../lua build/asan/lua

build/asan/obj/%.o: src/%.c
	@mkdir -p $(@D)
	clang $(call layer_cflags,$<) $(ASAN_FLAGS) -MMD -MP -c -o $@ $<

# The coverage build: gcov-instrumented, in build/cov/ (its .gcda files
# beside the objects), with a lua/ link like the sanitizer build.
build/cov/evlua: $(COV_OBJ)
	$(CC) $(COV_FLAGS) -o $@ $(COV_OBJ) $(LIBS)
	ln -sfn ../../lua build/cov/lua

build/cov/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(call layer_cflags,$<) $(COV_FLAGS) -MMD -MP -c -o $@ $<

# The C unit tests, built three times: plainly for make test, with the
# sanitizers (build/asan/tests/) for make asan-test, with gcov
# (build/cov/tests/) for make coverage. T(name) names all three.
ASAN_C_TESTS = $(C_TESTS:build/tests/%=build/asan/tests/%)
COV_C_TESTS = $(C_TESTS:build/tests/%=build/cov/tests/%)
T = build/tests/$(1) build/asan/tests/$(1) build/cov/tests/$(1)
$(C_TESTS) $(ASAN_C_TESTS) $(COV_C_TESTS): TEST_CC = $(CC)
$(ASAN_C_TESTS): TEST_CC = clang $(ASAN_FLAGS)
$(call T,test_msgpack): src/core/buffer.c
$(call T,test_http): src/core/buffer.c
$(call T,test_resp): src/core/buffer.c
$(call T,test_mongo): src/core/buffer.c
$(call T,test_http): TEST_LIBS = -lhttp_parser
$(call T,test_process): src/core/buffer.c
$(call T,test_process): TEST_LIBS = -lev
$(call T,test_stream): src/core/buffer.c src/core/net.c src/core/clock.c \
  src/core/loop.c
$(call T,test_stream): TEST_LIBS = -lev
$(call T,test_udp): src/core/net.c src/core/loop.c src/core/buffer.c
$(call T,test_udp): TEST_LIBS = -lev
$(call T,test_kcpnet): src/core/kcp.c src/core/udp.c src/core/stream.c \
  src/core/net.c src/core/loop.c src/core/buffer.c src/core/clock.c
$(call T,test_kcpnet): TEST_LIBS = -lev
$(call T,test_dns): TEST_LIBS = $(shell pkg-config --libs $(CORE_PKGS)) -lev

build/tests/test_%: tests/c/test_%.c src/core/%.c
	@mkdir -p $(@D)
	$(TEST_CC) $(CORE_CFLAGS) -o $@ $^ \
	  $(shell pkg-config --cflags --libs cmocka) $(TEST_LIBS)

build/asan/tests/test_%: tests/c/test_%.c src/core/%.c
	@mkdir -p $(@D)
	$(TEST_CC) $(CORE_CFLAGS) -o $@ $^ \
	  $(shell pkg-config --cflags --libs cmocka) $(TEST_LIBS)

build/cov/tests/test_%: tests/c/test_%.c src/core/%.c
	@mkdir -p $(@D)
	$(TEST_CC) $(CORE_CFLAGS) $(COV_FLAGS) -o $@ $^ \
	  $(shell pkg-config --cflags --libs cmocka) $(TEST_LIBS)

test: deps-test all $(C_TESTS)
	@tests/run.sh ./evlua

asan-test: asan $(ASAN_C_TESTS)
	@C_TEST_DIR=build/asan/tests tests/run.sh build/asan/evlua

# Counters start from zero on each run; a failed test still gets its
# report (make exits with the tests' status after it).
GCOVR = gcovr --root . --filter 'src/' build/cov
coverage: deps-test deps-coverage build/cov/evlua $(COV_C_TESTS)
	@find build/cov -name '*.gcda' -delete
	@C_TEST_DIR=build/cov/tests tests/run.sh build/cov/evlua; \
	  status=$$?; \
	  $(GCOVR) --print-summary --txt build/cov/coverage.txt \
	    --html-details build/cov/index.html | tail -n 3; \
	  echo "coverage per file: build/cov/coverage.txt, build/cov/index.html"; \
	  exit $$status

# Fuzz the network decoders with libFuzzer (clang), FUZZ_SECONDS each,
# starting from the committed seeds in tests/fuzz/corpus/NAME (what a run
# finds goes to build/fuzz/corpus-NAME).
FUZZ_SECONDS ?= 30
FUZZERS = build/fuzz/fuzz_msgpack build/fuzz/fuzz_http build/fuzz/fuzz_resp \
  build/fuzz/fuzz_kcp build/fuzz/fuzz_bson build/fuzz/fuzz_mongo
$(FUZZERS): | deps-test
fuzz: deps-test $(FUZZERS)
	@for f in $(FUZZERS); do \
	  mkdir -p build/fuzz/corpus-$$(basename $$f); \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    build/fuzz/corpus-$$(basename $$f) \
	    tests/fuzz/corpus/$$(basename $$f) || exit 1; \
	done

build/fuzz/fuzz_msgpack: tests/fuzz/fuzz_msgpack.c src/core/msgpack.c src/core/buffer.c
	@mkdir -p $(@D)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core -o $@ $^

build/fuzz/fuzz_resp: tests/fuzz/fuzz_resp.c src/core/resp.c src/core/buffer.c
	@mkdir -p $(@D)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core -o $@ $^

build/fuzz/fuzz_mongo: tests/fuzz/fuzz_mongo.c src/core/mongo.c src/core/buffer.c
	@mkdir -p $(@D)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core \
	  $(shell pkg-config --cflags libbson-1.0) -o $@ $^ \
	  $(shell pkg-config --libs libbson-1.0)

build/fuzz/fuzz_kcp: tests/fuzz/fuzz_kcp.c src/core/kcp.c
	@mkdir -p $(@D)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core -o $@ $^

# The BSON decoder needs a Lua state: lbson.c itself, on Lua and libbson.
build/fuzz/fuzz_bson: tests/fuzz/fuzz_bson.c src/lua/lbson.c src/lua/lbson.h
	@mkdir -p $(@D)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core -Isrc/lua -o $@ \
	  tests/fuzz/fuzz_bson.c src/lua/lbson.c $$(pkg-config --cflags --libs lua5.4 libbson-1.0)

build/fuzz/fuzz_http: tests/fuzz/fuzz_http.c src/core/http.c src/core/buffer.c
	@mkdir -p $(@D)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/core -o $@ $^ -lhttp_parser

# KCP interop peers: kcp-go (Debian's golang-github-xtaci-kcp-dev, built
# offline in GOPATH mode) and our engine over a real UDP socket.
build/peers/kcp_peer: tests/peers/kcp_peer.go
	@mkdir -p $(@D)
	GO111MODULE=off GOPATH=/usr/share/gocode go build -o $@ tests/peers/kcp_peer.go

build/peers/kcp_c_echo: tests/peers/kcp_c_echo.c src/core/kcp.c
	@mkdir -p $(@D)
	$(CC) $(CORE_CFLAGS) -o $@ $^

bench: deps-bench all
	@bench/run.sh

# luacheck over the Lua code (.luacheckrc); CI runs it.
lint: deps-test
	@luacheck -q lua tests bench examples

# Slow (a debootstrap and every package): run by hand, not in CI.
fresh-check:
	@tests/fresh/run.sh

install: evlua
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SHARE_DIR)/lua/evlua \
	  $(DESTDIR)$(SHARE_DIR)/examples $(DESTDIR)$(SHARE_DIR)/tools \
	  $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 evlua $(DESTDIR)$(PREFIX)/bin/evlua
	install -m 644 lua/*.lua $(DESTDIR)$(SHARE_DIR)/lua/
	install -m 644 lua/evlua/*.lua $(DESTDIR)$(SHARE_DIR)/lua/evlua/
	install -m 644 examples/*.lua $(DESTDIR)$(SHARE_DIR)/examples/
	install -m 644 tools/evlua-gdb.py $(DESTDIR)$(SHARE_DIR)/tools/
	install -m 644 man/evlua.1 $(DESTDIR)$(PREFIX)/share/man/man1/evlua.1

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/evlua
	rm -f $(DESTDIR)$(PREFIX)/share/man/man1/evlua.1
	rm -rf $(DESTDIR)$(SHARE_DIR)

clean:
	rm -rf build evlua

-include $(OBJ:.o=.d) $(ASAN_OBJ:.o=.d) $(COV_OBJ:.o=.d)
