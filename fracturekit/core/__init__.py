"""What every stage uses: errors, user paths, the on-disk layout, output folders and locks, devices, options."""
