// SPDX-License-Identifier: GPL-2.0
/*
 * A real slab-cache creation failure, for fragtrace's VM tests: asks kmem_cache_create for
 * objects larger than the largest slab order allows, which the kernel refuses (NULL), then
 * fails its own init so that nothing stays loaded.
 */
#include <linux/module.h>
#include <linux/slab.h>

static int __init fragtrace_slab_fail_init(void)
{
	struct kmem_cache *cache;

	cache = kmem_cache_create("fragtrace_test_cache", KMALLOC_MAX_SIZE + 1, 0, 0, NULL);
	if (cache) {
		kmem_cache_destroy(cache);
		return -EEXIST;
	}
	return -EAGAIN;
}

module_init(fragtrace_slab_fail_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("fragtrace VM test: a kmem_cache_create that fails");
