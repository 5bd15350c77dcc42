/* The program of the c-multistage example: built static in a Debian builder stage, it is
 * the only file of its image. Greets its arguments (the image's cmd: "world"). */
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        printf("hello, %s, from a static C binary (uid %d)\n", argv[i], (int)getuid());
    if (argc < 2)
        printf("hello from a static C binary (uid %d)\n", (int)getuid());
    return 0;
}
