/* Unicode general-category ranges for the tokenizer (see the generator,
 * tools/gen_unicode_tables.py). */
#ifndef KILN_MODEL_UNICODE_TABLES_H_
#define KILN_MODEL_UNICODE_TABLES_H_

#include <stdint.h>

extern const char km_unicode_version[];
extern const uint32_t km_unicode_n_ranges;
extern const uint32_t km_unicode_ranges[][3];

#endif
