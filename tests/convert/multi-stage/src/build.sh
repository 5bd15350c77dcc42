set -e
echo "built from $(ls | wc -l) files"
