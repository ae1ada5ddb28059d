/*
** lcrypto.c - the few primitives of libcrypto (OpenSSL 3) that SCRAM
** authentication needs, as functions of the core table:
**
**   core.digest(name, data) -> raw digest
**   core.hmac(name, key, data) -> raw mac
**   core.pbkdf2(name, password, salt, iterations, length) -> raw key
**   core.random_bytes(n) -> n bytes from the CSPRNG
**   core.base64_encode(s) -> s
**   core.base64_decode(s) -> s | nil, err, "bad_base64"
**   core.xor(a, b) -> a XOR b (equal lengths)
**
** name is "sha1", "sha256" or "md5". Bad arguments raise; a failure of
** libcrypto itself returns nil, message, "crypto".
*/
#include <limits.h>
#include <string.h>

#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "runtime.h"

/* PBKDF2 is slow by design: a count this large is a mistake, not a
** stronger key (MongoDB's default is 15000 for SHA-256, 10000 for SHA-1). */
#define EVLUA_PBKDF2_MAX_ITERATIONS 10000000
#define EVLUA_PBKDF2_MAX_LENGTH 1024
#define EVLUA_RANDOM_MAX (1 << 20)

/* Hashes ============================================================== */

static const EVP_MD *check_md(lua_State *L, int idx) {
  static const char *const names[] = { "sha1", "sha256", "md5", NULL };
  switch (luaL_checkoption(L, idx, NULL, names)) {
  case 0: return EVP_sha1();
  case 1: return EVP_sha256();
  default: return EVP_md5();
  }
}

static int fail_crypto(lua_State *L, const char *what) {
  return evlua_fail(L, "crypto", "%s failed", what);
}

static int l_digest(lua_State *L) {
  const EVP_MD *md = check_md(L, 1);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!EVP_Digest(data, n, out, &len, md, NULL)) return fail_crypto(L, "digest");
  lua_pushlstring(L, (const char *)out, len);
  return 1;
}

static int l_hmac(lua_State *L) {
  const EVP_MD *md = check_md(L, 1);
  size_t klen, n;
  const char *key = luaL_checklstring(L, 2, &klen);
  const char *data = luaL_checklstring(L, 3, &n);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  luaL_argcheck(L, klen <= INT_MAX, 2, "key too long");
  /* HMAC() with a NULL key pointer treats it as a failure: pass a byte */
  if (HMAC(md, klen ? key : "", (int)klen, (const unsigned char *)data, n,
           out, &len) == NULL)
    return fail_crypto(L, "hmac");
  lua_pushlstring(L, (const char *)out, len);
  return 1;
}

static int l_pbkdf2(lua_State *L) {
  const EVP_MD *md = check_md(L, 1);
  size_t plen, slen;
  const char *pass = luaL_checklstring(L, 2, &plen);
  const char *salt = luaL_checklstring(L, 3, &slen);
  lua_Integer iter = luaL_checkinteger(L, 4);
  lua_Integer len = luaL_checkinteger(L, 5);
  unsigned char out[EVLUA_PBKDF2_MAX_LENGTH];
  luaL_argcheck(L, iter >= 1 && iter <= EVLUA_PBKDF2_MAX_ITERATIONS, 4,
                "iterations out of range 1..10000000");
  luaL_argcheck(L, len >= 1 && len <= EVLUA_PBKDF2_MAX_LENGTH, 5,
                "length out of range 1..1024");
  luaL_argcheck(L, plen <= INT_MAX, 2, "password too long");
  luaL_argcheck(L, slen <= INT_MAX, 3, "salt too long");
  if (!PKCS5_PBKDF2_HMAC(pass, (int)plen, (const unsigned char *)salt,
                         (int)slen, (int)iter, md, (int)len, out))
    return fail_crypto(L, "pbkdf2");
  lua_pushlstring(L, (const char *)out, (size_t)len);
  return 1;
}

static int l_random_bytes(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_Buffer b;
  luaL_argcheck(L, n >= 0 && n <= EVLUA_RANDOM_MAX, 1,
                "count out of range 0..1048576");
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
  if (n > 0 && RAND_bytes(p, (int)n) != 1) return fail_crypto(L, "random");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* Base64 and xor ====================================================== */

static const char b64_alphabet[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int l_base64_encode(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  size_t olen = (n + 2) / 3 * 4;
  char *o = luaL_buffinitsize(L, &b, olen);
  size_t i = 0, j = 0;
  for (; i + 3 <= n; i += 3) {
    unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
    o[j++] = b64_alphabet[v >> 18 & 63];
    o[j++] = b64_alphabet[v >> 12 & 63];
    o[j++] = b64_alphabet[v >> 6 & 63];
    o[j++] = b64_alphabet[v & 63];
  }
  if (n - i == 1) {
    unsigned v = (unsigned)s[i] << 16;
    o[j++] = b64_alphabet[v >> 18 & 63];
    o[j++] = b64_alphabet[v >> 12 & 63];
    o[j++] = '=';
    o[j++] = '=';
  } else if (n - i == 2) {
    unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8;
    o[j++] = b64_alphabet[v >> 18 & 63];
    o[j++] = b64_alphabet[v >> 12 & 63];
    o[j++] = b64_alphabet[v >> 6 & 63];
    o[j++] = '=';
  }
  luaL_pushresultsize(&b, j);
  return 1;
}

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Strict: length a multiple of 4, only the alphabet, '=' only as the
** last one or two characters, and the bits the padding drops are zero
** (so every string has exactly one encoding). */
static int l_base64_decode(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  if (n % 4 != 0)
    return evlua_fail(L, "bad_base64", "base64 length not a multiple of 4");
  size_t pad = 0;
  if (n >= 1 && s[n - 1] == '=') pad++;
  if (pad && n >= 2 && s[n - 2] == '=') pad++;
  luaL_Buffer b;
  char *o = luaL_buffinitsize(L, &b, n / 4 * 3);
  size_t j = 0;
  for (size_t i = 0; i < n; i += 4) {
    int v[4];
    int last = i + 4 == n;
    for (int k = 0; k < 4; k++) {
      size_t at = i + (size_t)k;
      if (last && s[at] == '=' && at >= n - pad) { v[k] = 0; continue; }
      v[k] = b64_value(s[at]);
      if (v[k] < 0) {
        if (s[at] == '=')
          return evlua_fail(L, "bad_base64", "base64 padding misplaced at %d",
                            (int)at + 1);
        return evlua_fail(L, "bad_base64", "bad base64 character at %d",
                          (int)at + 1);
      }
    }
    unsigned w = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 |
                 (unsigned)v[2] << 6 | (unsigned)v[3];
    o[j++] = (char)(w >> 16 & 255);
    if (!last || pad < 2) o[j++] = (char)(w >> 8 & 255);
    if (!last || pad < 1) o[j++] = (char)(w & 255);
    if (last && ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff))))
      return evlua_fail(L, "bad_base64", "base64 padding bits not zero");
  }
  luaL_pushresultsize(&b, j);
  return 1;
}

static int l_xor(lua_State *L) {
  size_t na, nb;
  const unsigned char *a = (const unsigned char *)luaL_checklstring(L, 1, &na);
  const unsigned char *bb = (const unsigned char *)luaL_checklstring(L, 2, &nb);
  luaL_argcheck(L, na == nb, 2, "string of the same length expected");
  luaL_Buffer b;
  char *o = luaL_buffinitsize(L, &b, na);
  for (size_t i = 0; i < na; i++) o[i] = (char)(a[i] ^ bb[i]);
  luaL_pushresultsize(&b, na);
  return 1;
}

void evlua_open_crypto(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "digest", l_digest },
    { "hmac", l_hmac },
    { "pbkdf2", l_pbkdf2 },
    { "random_bytes", l_random_bytes },
    { "base64_encode", l_base64_encode },
    { "base64_decode", l_base64_decode },
    { "xor", l_xor },
    { NULL, NULL }
  };
  luaL_setfuncs(L, funcs, 0);   /* into the core table */
}
