/* SPDX-License-Identifier: MIT */
/*
 * svg.h - what the passes that draw SVG plots share (prune's sensitivity
 * plot, cascade's threshold sweep): the head of the document and escaped
 * text. Header-only: every plugin that includes it has its own copy, and
 * nothing of it is exported.
 */
#ifndef PASSES_SVG_H
#define PASSES_SVG_H

#include <stdio.h>

/* The XML declaration and the opening <svg> element of w x h pixels, in
 * 12-pixel sans-serif, on a white background. */
static inline void svg_begin(FILE *f, double w, double h)
{
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		   "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
		   "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
		w, h, w, h);
}

/* s as element text: <, > and & escaped. */
static inline void svg_text(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '<')
			fputs("&lt;", f);
		else if (*s == '>')
			fputs("&gt;", f);
		else if (*s == '&')
			fputs("&amp;", f);
		else
			fputc(*s, f);
	}
}

#endif
