# order.mk - included by the Makefile (not by automake): install.sh's log
# waits for every other test's, since its `make install` relinks the passes
# in their .libs while other tests would be loading them.
tests/install.sh.log: $(filter-out tests/install.sh.log,$(TEST_LOGS))
