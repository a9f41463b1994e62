#include <immintrin.h>
#include <stdint.h>
#include <stddef.h>
/* MD5 of 16 independent messages at once (AVX-512F), one lane of a 512-bit register
 * each: the multi-buffer way (isa-l_crypto's md5_mb, minio's md5-simd). A probe for
 * bench/md5_lanes.py (issue 17: what would make the area checksums' ETag cheaper), not
 * used by the gateway.
 *
 * st: the 16 states, a[16] b[16] c[16] d[16]; lane l hashes nblocks 64-byte blocks from
 * base + off[l] (the caller pads the last block, as MD5 does). */
static const uint32_t K[64] = {
0xd76aa478,0xe8c7b756,0x242070db,0xc1bdceee,0xf57c0faf,0x4787c62a,0xa8304613,0xfd469501,
0x698098d8,0x8b44f7af,0xffff5bb1,0x895cd7be,0x6b901122,0xfd987193,0xa679438e,0x49b40821,
0xf61e2562,0xc040b340,0x265e5a51,0xe9b6c7aa,0xd62f105d,0x02441453,0xd8a1e681,0xe7d3fbc8,
0x21e1cde6,0xc33707d6,0xf4d50d87,0x455a14ed,0xa9e3e905,0xfcefa3f8,0x676f02d9,0x8d2a4c8a,
0xfffa3942,0x8771f681,0x6d9d6122,0xfde5380c,0xa4beea44,0x4bdecfa9,0xf6bb4b60,0xbebfbc70,
0x289b7ec6,0xeaa127fa,0xd4ef3085,0x04881d05,0xd9d4d039,0xe6db99e5,0x1fa27cf8,0xc4ac5665,
0xf4292244,0x432aff97,0xab9423a7,0xfc93a039,0x655b59c3,0x8f0ccc92,0xffeff47d,0x85845dd1,
0x6fa87e4f,0xfe2ce6e0,0xa3014314,0x4e0811a1,0xf7537e82,0xbd3af235,0x2ad7d2bb,0xeb86d391};
#define STEP(imm, a, b, c, d, k, s, w) do { \
  __m512i f = _mm512_ternarylogic_epi32(b, c, d, imm); \
  a = _mm512_add_epi32(a, _mm512_add_epi32(f, _mm512_add_epi32(_mm512_set1_epi32(K[k]), w))); \
  a = _mm512_add_epi32(b, _mm512_rol_epi32(a, s)); } while (0)
#define STEPG(a, b, c, d, k, s, w) do { \
  __m512i f = _mm512_ternarylogic_epi32(d, b, c, 0xca); \
  a = _mm512_add_epi32(a, _mm512_add_epi32(f, _mm512_add_epi32(_mm512_set1_epi32(K[k]), w))); \
  a = _mm512_add_epi32(b, _mm512_rol_epi32(a, s)); } while (0)

void md5x16(uint32_t *st, const uint8_t *base, const int32_t *off, size_t nblocks) {
  __m512i a = _mm512_loadu_si512(st), b = _mm512_loadu_si512(st + 16),
          c = _mm512_loadu_si512(st + 32), d = _mm512_loadu_si512(st + 48);
  __m512i idx = _mm512_loadu_si512(off);
  const __m512i four = _mm512_set1_epi32(4), sixtyfour = _mm512_set1_epi32(64);
  for (size_t n = 0; n < nblocks; n++) {
    __m512i w[16];
    __m512i at = idx;
    for (int i = 0; i < 16; i++) { w[i] = _mm512_i32gather_epi32(at, base, 1); at = _mm512_add_epi32(at, four); }
    idx = _mm512_add_epi32(idx, sixtyfour);
    __m512i aa = a, bb = b, cc = c, dd = d;
    STEP(0xca,a,b,c,d, 0, 7,w[0]);  STEP(0xca,d,a,b,c, 1,12,w[1]);  STEP(0xca,c,d,a,b, 2,17,w[2]);  STEP(0xca,b,c,d,a, 3,22,w[3]);
    STEP(0xca,a,b,c,d, 4, 7,w[4]);  STEP(0xca,d,a,b,c, 5,12,w[5]);  STEP(0xca,c,d,a,b, 6,17,w[6]);  STEP(0xca,b,c,d,a, 7,22,w[7]);
    STEP(0xca,a,b,c,d, 8, 7,w[8]);  STEP(0xca,d,a,b,c, 9,12,w[9]);  STEP(0xca,c,d,a,b,10,17,w[10]); STEP(0xca,b,c,d,a,11,22,w[11]);
    STEP(0xca,a,b,c,d,12, 7,w[12]); STEP(0xca,d,a,b,c,13,12,w[13]); STEP(0xca,c,d,a,b,14,17,w[14]); STEP(0xca,b,c,d,a,15,22,w[15]);
    STEPG(a,b,c,d,16, 5,w[1]);  STEPG(d,a,b,c,17, 9,w[6]);  STEPG(c,d,a,b,18,14,w[11]); STEPG(b,c,d,a,19,20,w[0]);
    STEPG(a,b,c,d,20, 5,w[5]);  STEPG(d,a,b,c,21, 9,w[10]); STEPG(c,d,a,b,22,14,w[15]); STEPG(b,c,d,a,23,20,w[4]);
    STEPG(a,b,c,d,24, 5,w[9]);  STEPG(d,a,b,c,25, 9,w[14]); STEPG(c,d,a,b,26,14,w[3]);  STEPG(b,c,d,a,27,20,w[8]);
    STEPG(a,b,c,d,28, 5,w[13]); STEPG(d,a,b,c,29, 9,w[2]);  STEPG(c,d,a,b,30,14,w[7]);  STEPG(b,c,d,a,31,20,w[12]);
    STEP(0x96,a,b,c,d,32, 4,w[5]);  STEP(0x96,d,a,b,c,33,11,w[8]);  STEP(0x96,c,d,a,b,34,16,w[11]); STEP(0x96,b,c,d,a,35,23,w[14]);
    STEP(0x96,a,b,c,d,36, 4,w[1]);  STEP(0x96,d,a,b,c,37,11,w[4]);  STEP(0x96,c,d,a,b,38,16,w[7]);  STEP(0x96,b,c,d,a,39,23,w[10]);
    STEP(0x96,a,b,c,d,40, 4,w[13]); STEP(0x96,d,a,b,c,41,11,w[0]);  STEP(0x96,c,d,a,b,42,16,w[3]);  STEP(0x96,b,c,d,a,43,23,w[6]);
    STEP(0x96,a,b,c,d,44, 4,w[9]);  STEP(0x96,d,a,b,c,45,11,w[12]); STEP(0x96,c,d,a,b,46,16,w[15]); STEP(0x96,b,c,d,a,47,23,w[2]);
    STEP(0x39,a,b,c,d,48, 6,w[0]);  STEP(0x39,d,a,b,c,49,10,w[7]);  STEP(0x39,c,d,a,b,50,15,w[14]); STEP(0x39,b,c,d,a,51,21,w[5]);
    STEP(0x39,a,b,c,d,52, 6,w[12]); STEP(0x39,d,a,b,c,53,10,w[3]);  STEP(0x39,c,d,a,b,54,15,w[10]); STEP(0x39,b,c,d,a,55,21,w[1]);
    STEP(0x39,a,b,c,d,56, 6,w[8]);  STEP(0x39,d,a,b,c,57,10,w[15]); STEP(0x39,c,d,a,b,58,15,w[6]);  STEP(0x39,b,c,d,a,59,21,w[13]);
    STEP(0x39,a,b,c,d,60, 6,w[4]);  STEP(0x39,d,a,b,c,61,10,w[11]); STEP(0x39,c,d,a,b,62,15,w[2]);  STEP(0x39,b,c,d,a,63,21,w[9]);
    a = _mm512_add_epi32(a, aa); b = _mm512_add_epi32(b, bb); c = _mm512_add_epi32(c, cc); d = _mm512_add_epi32(d, dd);
  }
  _mm512_storeu_si512(st, a); _mm512_storeu_si512(st + 16, b); _mm512_storeu_si512(st + 32, c); _mm512_storeu_si512(st + 48, d);
}
