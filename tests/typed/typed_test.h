/* Raw selectors of the typed-call test enclave, next to its generated ones (alltypes.proto). */
#ifndef MOAT_TYPED_TEST_H
#define MOAT_TYPED_TEST_H

#include <moat/common.h>

/* Make a raw exit call to Mirror.Same with item 0 as its only item; reply: the result as a u64. */
#define TT_RAW_EXIT (MOAT_SELECTOR_USER + 1)
/* Call Mirror.Fail with code from item 0 (u64) through the generated stub; reply: the result as a u64. */
#define TT_EXIT_FAIL (MOAT_SELECTOR_USER + 2)

#endif
