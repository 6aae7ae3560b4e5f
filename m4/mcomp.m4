dnl MC_REQUIRE_PKG(VAR, MODULE, DEBIAN-PACKAGE)
dnl Finds MODULE with pkg-config into VAR_CFLAGS/VAR_LIBS; stops with a message
dnl naming the Debian package to install when it is missing.
AC_DEFUN([MC_REQUIRE_PKG], [
	PKG_CHECK_MODULES([$1], [$2], [],
		[AC_MSG_ERROR([$2 not found: install it with `apt-get install $3` (or run scripts/setup.sh, which installs every dependency)])])
])

dnl AX_CHECK_CFLAGS_LIST(FLAGS): appends each flag the compiler accepts to WARN_CFLAGS.
AC_DEFUN([AX_CHECK_CFLAGS_LIST], [
	for mc_flag in $1; do
		AC_MSG_CHECKING([whether $CC accepts $mc_flag])
		mc_save_CFLAGS="$CFLAGS"
		CFLAGS="$CFLAGS -Werror $mc_flag"
		AC_COMPILE_IFELSE([AC_LANG_PROGRAM([], [])],
			[AC_MSG_RESULT([yes]); WARN_CFLAGS="$WARN_CFLAGS $mc_flag"],
			[AC_MSG_RESULT([no])])
		CFLAGS="$mc_save_CFLAGS"
	done
])
